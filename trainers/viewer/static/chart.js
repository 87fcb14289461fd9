// Line charts drawn as SVG: lines, step lines and points per series, shared x axis (step),
// a hover readout of the nearest step. No dependencies.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

// Round tick values covering [lo, hi].
function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; lo = lo - (lo === 0 ? 0 : 1); }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 3);
}

// series: [{label, color, kind: "line"|"step"|"points", dash, points: [[x, y], ...]}]
function drawChart(title, series, opts) {
  const W = (opts && opts.width) || 420, H = (opts && opts.height) || 230;
  const pad = { l: 48, r: 12, t: 26, b: 28 };
  const box = document.createElement("div");
  box.className = "chart";
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title });
  box.appendChild(svg);
  const t = svgEl("text", { x: pad.l, y: 16, class: "chart-title" });
  t.textContent = title;
  svg.appendChild(t);
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  if (!all.length) {
    const e = svgEl("text", { x: W / 2, y: H / 2, class: "chart-empty", "text-anchor": "middle" });
    e.textContent = "no data";
    svg.appendChild(e);
    return box;
  }
  let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  let y0 = Math.min(...all.map((p) => p[1])), y1 = Math.max(...all.map((p) => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const yt = niceTicks(y0, y1, 4), xt = niceTicks(x0, x1, 5);
  y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]);
  const sx = (x) => pad.l + ((x - x0) / (x1 - x0)) * (W - pad.l - pad.r);
  const sy = (y) => H - pad.b - ((y - y0) / (y1 - y0)) * (H - pad.t - pad.b);
  const axis = svgEl("g", { class: "axis" });
  for (const v of yt) {
    if (v < y0 || v > y1) continue;
    axis.appendChild(svgEl("line", { x1: pad.l, x2: W - pad.r, y1: sy(v), y2: sy(v), class: "grid" }));
    const l = svgEl("text", { x: pad.l - 4, y: sy(v) + 3, "text-anchor": "end" });
    l.textContent = fmt(v);
    axis.appendChild(l);
  }
  for (const v of xt) {
    if (v < x0 || v > x1) continue;
    const l = svgEl("text", { x: sx(v), y: H - pad.b + 14, "text-anchor": "middle" });
    l.textContent = fmt(v);
    axis.appendChild(l);
  }
  const xl = svgEl("text", { x: W - pad.r, y: H - 3, "text-anchor": "end" });
  xl.textContent = "step";
  axis.appendChild(xl);
  svg.appendChild(axis);
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    if (!pts.length) continue;
    if (s.kind === "points") {
      const g = svgEl("g", { class: "series-points", "data-label": s.label });
      for (const [x, y] of pts) {
        const c = svgEl("circle", { cx: sx(x), cy: sy(y), r: 3.5, fill: s.color, stroke: "#fff", "stroke-width": 1 });
        const tt = svgEl("title");
        tt.textContent = `${s.label} @ ${x}: ${fmt(y)}`;
        c.appendChild(tt);
        g.appendChild(c);
      }
      svg.appendChild(g);
      continue;
    }
    let d = `M${sx(pts[0][0])},${sy(pts[0][1])}`;
    for (let i = 1; i < pts.length; i++) {
      d += s.kind === "step" ? `H${sx(pts[i][0])}V${sy(pts[i][1])}` : `L${sx(pts[i][0])},${sy(pts[i][1])}`;
    }
    const path = svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": s.kind === "step" ? 1.5 : 1.6,
      class: "series-line", "data-label": s.label });
    if (s.dash) path.setAttribute("stroke-dasharray", s.dash);
    svg.appendChild(path);
  }
  // Hover: a guide at the nearest step and the values there.
  const guide = svgEl("line", { y1: pad.t, y2: H - pad.b, class: "guide", visibility: "hidden" });
  svg.appendChild(guide);
  const readout = document.createElement("div");
  readout.className = "readout";
  box.appendChild(readout);
  svg.addEventListener("mousemove", (ev) => {
    const r = svg.getBoundingClientRect();
    const x = x0 + ((ev.clientX - r.left) * (W / r.width) - pad.l) / (W - pad.l - pad.r) * (x1 - x0);
    const lines = [];
    let best = null;
    for (const s of series) {
      let near = null;
      for (const p of s.points) if (near === null || Math.abs(p[0] - x) < Math.abs(near[0] - x)) near = p;
      if (near && (s.kind !== "points" || Math.abs(near[0] - x) <= (x1 - x0) / 40)) {
        lines.push(`${s.label}: ${fmt(near[1])} @ ${near[0]}`);
        if (best === null) best = near[0];
      }
    }
    if (best === null) return;
    guide.setAttribute("x1", sx(best));
    guide.setAttribute("x2", sx(best));
    guide.setAttribute("visibility", "visible");
    readout.textContent = lines.join("\n");
  });
  svg.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); readout.textContent = ""; });
  return box;
}
