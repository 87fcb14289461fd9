// gymwire view: the page. Hash routes (#runs, #curves, #evals, #episodes?filters, #episode/ID,
// #compare/ID/ID), JSON from /api, and a poll of /api/state that refreshes the open view when
// the runs on disk change (live follow).
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
const ROW_H = 26;
const PAGE = 200;
const POLL_MS = 1500;

// The charts every training run gets, in this order; other numeric metrics follow.
const CHARTS = [
  { title: "success", lines: ["train/success"], points: ["eval/success"] },
  { title: "reward", lines: ["train/reward"], points: ["eval/reward"] },
  { title: "turns (horizon as a step line)", lines: ["train/turns"], steps: ["train/horizon"], points: ["eval/turns"] },
  { title: "KL", lines: ["train/kl"] },
  { title: "entropy", lines: ["train/entropy"] },
  { title: "loss", lines: ["train/loss"] },
  { title: "tokens/s", lines: ["train/tokens_per_s"] },
];

const app = { state: null, generation: -1, view: null, hidden: new Set(), picked: [] };

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  return response.json();
}

// Replace a container's content; null and false children (optional parts) are left out.
function setMain(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function showBanner(text) {
  const b = document.getElementById("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

function runColor(id) { return COLORS[id % COLORS.length]; }
function runName(id) { const r = app.state && app.state.runs[id]; return r ? r.name : `run ${id}`; }
function yesNo(v) { return v === true ? "✓" : v === false ? "✗" : "–"; }

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "runs";
  const [path, query] = raw.split("?");
  return { parts: path.split("/"), params: new URLSearchParams(query || "") };
}

function notesBox(notes) {
  if (!notes || !notes.length) return null;
  return h("ul", { class: "notes" }, notes.map((n) => h("li", null, n)));
}

// ---------------------------------------------------------------- runs

function runsView(main) {
  const render = () => {
    setMain(main, h("h2", null, "Runs"),
      h("table", { class: "grid-table", id: "runs-table" },
        h("thead", null, h("tr", null, ["", "run", "kind", "setup", "steps", "last step", "episodes", "files", "path"].map((c) => h("th", null, c)))),
        h("tbody", null, app.state.runs.map((r) => [
          h("tr", { "data-run": r.id },
            h("td", null, h("input", { type: "checkbox", title: "show in curves", checked: !app.hidden.has(r.id),
              onchange: (e) => { e.target.checked ? app.hidden.delete(r.id) : app.hidden.add(r.id); } })),
            h("td", null, h("span", { class: "swatch", style: `background:${runColor(r.id)}` }), r.name),
            h("td", null, r.kind), h("td", null, setup(r)), h("td", null, r.kind === "train" ? r.steps : "–"), h("td", null, r.last_step ?? "–"),
            h("td", null, h("a", { href: `#episodes?run=${r.id}` }, r.episodes.toLocaleString())),
            h("td", null, r.files), h("td", { class: "path" }, r.path)),
          r.notes.length ? h("tr", null, h("td", { colspan: 9 }, notesBox(r.notes))) : null,
          h("tr", null, h("td", { colspan: 9 }, h("details", { class: "config" },
            h("summary", null, r.config ? "config" : "config: none found"),
            r.config ? h("pre", null, JSON.stringify(r.config, null, 2)) : null,
            r.results ? h("pre", null, JSON.stringify(r.results, null, 2)) : null))),
        ])))
    );
  };
  render();
  return { refresh: render };
}

// A run's setup in one line, from its config (training) or run.json (eval).
function setup(r) {
  const c = r.config;
  if (!c || typeof c !== "object") return "–";
  const get = (...keys) => keys.reduce((v, k) => (v && typeof v === "object" ? v[k] : undefined), c);
  const parts = r.kind === "eval"
    ? [get("backend"), get("split") && `split ${get("split")}`, get("tasks") && `${get("tasks")} tasks`]
    : [get("env", "name"), get("algorithm", "estimator"), get("horizon") !== undefined && `horizon ${JSON.stringify(get("horizon"))}`,
       get("rollout", "tasks_per_step") && `${get("rollout", "tasks_per_step")}×${get("rollout", "group_size")} episodes/step`];
  return parts.filter(Boolean).join(" · ") || "–";
}

// ---------------------------------------------------------------- curves

function curvesView(main) {
  const render = async () => {
    const metrics = await getJSON("/api/metrics");
    const runs = app.state.runs.filter((r) => !app.hidden.has(r.id) && (metrics[r.id] || []).length);
    const byRun = Object.fromEntries(runs.map((r) => [r.id, metrics[r.id]]));
    const series = (key, r, kind, dash) => ({
      label: runs.length > 1 ? `${r.name} ${key}` : key, color: runColor(r.id), kind, dash,
      points: byRun[r.id].filter((m) => typeof m[key] === "number" && typeof m.step === "number").map((m) => [m.step, m[key]]),
    });
    const used = new Set(["step"]);
    const charts = [];
    for (const spec of CHARTS) {
      const s = [];
      for (const r of runs) {
        for (const k of spec.lines || []) { used.add(k); s.push(series(k, r, "line")); }
        for (const k of spec.steps || []) { used.add(k); s.push(series(k, r, "step", "5 3")); }
        for (const k of spec.points || []) { used.add(k); s.push(series(k, r, "points")); }
      }
      charts.push(drawChart(spec.title, s));
    }
    const others = new Set();
    for (const r of runs) for (const m of byRun[r.id]) for (const [k, v] of Object.entries(m)) if (!used.has(k) && typeof v === "number") others.add(k);
    const otherCharts = [...others].sort().map((k) => drawChart(k, runs.map((r) => series(k, r, k.startsWith("eval/") ? "points" : "line"))));
    const legend = h("div", { class: "legend" }, runs.map((r) => h("span", null, h("span", { class: "swatch", style: `background:${runColor(r.id)}` }), r.name)),
      h("span", { class: "hint" }, "lines: training steps · dots: evaluations · dashed step line: horizon (turn limit)"));
    const missing = app.state.runs.filter((r) => !app.hidden.has(r.id) && !(metrics[r.id] || []).length && r.kind === "train");
    setMain(main, h("h2", null, "Curves"), legend,
      missing.length ? notesBox(missing.map((r) => `${r.name}: no metrics to draw (${r.notes.join("; ") || "metrics.jsonl is empty"})`)) : null,
      h("div", { class: "charts", id: "charts" }, charts),
      otherCharts.length ? h("details", { open: true }, h("summary", null, `other metrics (${otherCharts.length})`), h("div", { class: "charts" }, otherCharts)) : null);
  };
  render();
  return { refresh: render };
}

// ---------------------------------------------------------------- evals

function evalsView(main) {
  const render = async () => {
    const metrics = await getJSON("/api/metrics");
    const tables = [];
    // Eval outputs side by side, one column per output: results.json, or while an eval is still
    // running, what its episodes so far say.
    const evals = app.state.runs.filter((r) => r.kind === "eval");
    if (evals.length) {
      const perEnv = (r) => (r.results && r.results.envs) || r.live || {};
      const envs = [...new Set(evals.flatMap((r) => Object.keys(perEnv(r))))].sort();
      const shown = ["success", "score", "turns", "generated_tokens", "errors", "episodes", "tasks", "episodes_per_s", "finish", "error_kinds"];
      const rows = [];
      for (const env of envs) {
        rows.push(h("tr", { class: "env-row" }, h("th", { colspan: evals.length + 1 }, env)));
        for (const m of shown) {
          if (!evals.some((r) => (perEnv(r)[env] || {})[m] !== undefined)) continue;
          rows.push(h("tr", null, h("th", null, m), evals.map((r) => h("td", null, cell((perEnv(r)[env] || {})[m])))));
        }
      }
      tables.push(h("h3", null, "Eval outputs"), h("table", { class: "grid-table", id: "eval-table" },
        h("thead", null, h("tr", null, h("th", null, ""), evals.map((r) => h("th", null,
          h("span", { class: "swatch", style: `background:${runColor(r.id)}` }), r.name,
          r.results && r.results.envs ? null : h("div", { class: "hint" }, "running: from the episodes so far"))))),
        h("tbody", null, rows)));
    }
    // Training runs: the evaluations logged during training, step by step, runs side by side.
    const trains = app.state.runs.filter((r) => (metrics[r.id] || []).some((m) => Object.keys(m).some((k) => k.startsWith("eval/"))));
    for (const r of trains) {
      const rows = metrics[r.id].filter((m) => Object.keys(m).some((k) => k.startsWith("eval/")));
      const keys = [...new Set(rows.flatMap((m) => Object.keys(m).filter((k) => k.startsWith("eval/"))))];
      tables.push(h("h3", null, h("span", { class: "swatch", style: `background:${runColor(r.id)}` }), `${r.name}: evaluations during training`),
        h("table", { class: "grid-table eval-steps" },
          h("thead", null, h("tr", null, h("th", null, "step"), keys.map((k) => h("th", null, k.slice(5))))),
          h("tbody", null, rows.map((m) => h("tr", null, h("td", null, m.step), keys.map((k) => h("td", null, cell(m[k]))))))));
    }
    setMain(main, h("h2", null, "Evaluations"),
      tables.length ? h("div", { class: "side-by-side" }, tables) : h("p", { class: "hint" }, "No evaluations in these runs yet."));
  };
  render();
  return { refresh: render };
}

function cell(v) {
  if (typeof v === "number") return fmt(v);
  if (v === undefined || v === null) return "–";
  if (typeof v === "object" && typeof v.mean === "number") return `${fmt(v.mean)} (${fmt(v.low)}–${fmt(v.high)})`;
  if (typeof v === "object" && !Array.isArray(v)) return Object.entries(v).map(([k, x]) => `${k} ${cell(x)}`).join(", ") || "–";
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

// ---------------------------------------------------------------- episode browser

const FILTERS = ["run", "env", "split", "task", "step", "success", "finish", "q", "problems"];

function episodesView(main, params) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
  const pages = new Map();
  let total = 0;
  const count = h("span", { id: "episode-count", class: "count" });
  const compareBtn = h("button", { id: "compare", disabled: true, onclick: () => { location.hash = `#compare/${app.picked[0]}/${app.picked[1]}`; } }, "compare 2 picked");
  const spacer = h("div", { class: "spacer" });
  const list = h("div", { class: "vlist", id: "episode-list" }, spacer);
  const header = h("div", { class: "erow head" }, ["", "run", "step", "env", "split", "task", "group", "success", "finish", "reward", "turns", "note"].map((c) => h("span", null, c)));

  const query = (offset) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v !== "") q.set(k, v);
    q.set("offset", offset);
    q.set("limit", PAGE);
    return `/api/episodes?${q}`;
  };
  const setFilter = (k, v) => {
    filters[k] = v;
    const q = new URLSearchParams();
    for (const [key, val] of Object.entries(filters)) if (val !== "") q.set(key, val);
    history.replaceState(null, "", `#episodes?${q}`);
    pages.clear();
    list.scrollTop = 0;
    load(0, true);
  };
  const select = (k, label, values) => h("label", null, label, " ",
    h("select", { "data-filter": k, onchange: (e) => setFilter(k, e.target.value) },
      h("option", { value: "" }, "any"), values.map(([v, text]) => h("option", { value: v, selected: String(v) === filters[k] }, text))));
  const bar = h("div", { class: "filters" });

  const renderBar = async () => {
    const f = await getJSON(`/api/facets?run=${filters.run || "all"}`);
    const draft = bar.querySelector("input[data-filter=q]");  // typed, not yet applied: kept
    bar.replaceChildren(
      select("run", "run", app.state.runs.map((r) => [String(r.id), r.name])),
      select("env", "env", f.env.map((v) => [v, v])),
      select("split", "split", f.split.map((v) => [v, v])),
      h("label", null, "task ", h("input", { type: "number", min: 0, "data-filter": "task", value: filters.task, style: "width:6em",
        onchange: (e) => setFilter("task", e.target.value) })),
      select("step", "step", f.step.map((v) => [String(v), String(v)])),
      select("success", "success", [["1", "yes"], ["0", "no"]]),
      select("finish", "finish", f.finish.map((v) => [v, v])),
      h("label", null, "search ", h("input", { type: "search", "data-filter": "q", placeholder: "in actions and observations", value: draft ? draft.value : filters.q,
        onkeydown: (e) => { if (e.key === "Enter") setFilter("q", e.target.value.trim()); },
        onsearch: (e) => setFilter("q", e.target.value.trim()) })),
      h("label", null, h("input", { type: "checkbox", "data-filter": "problems", checked: filters.problems === "1",
        onchange: (e) => setFilter("problems", e.target.checked ? "1" : "") }), " unreadable lines only"),
      count, compareBtn);
  };

  const rowEl = (r, i) => {
    const picked = app.picked.includes(r.id);
    return h("div", { class: `erow${r.problem ? " bad" : ""}${picked ? " picked" : ""}`, style: `top:${i * ROW_H}px`, "data-id": r.id, "data-index": i,
      onclick: (e) => { if (e.target.tagName !== "INPUT") location.hash = `#episode/${r.id}`; } },
      h("span", null, h("input", { type: "checkbox", title: "pick for side-by-side", checked: picked, onchange: (e) => pick(r.id, e.target.checked) })),
      h("span", null, h("span", { class: "swatch", style: `background:${runColor(r.run)}` }), runName(r.run)),
      h("span", null, r.step ?? "–"), h("span", null, r.env), h("span", null, r.split ?? "–"), h("span", null, r.task ?? "–"),
      h("span", null, r.group ?? "–"), h("span", { class: r.success ? "ok" : r.success === false ? "fail" : "" }, yesNo(r.success)),
      h("span", null, r.finish || "–"), h("span", null, r.reward === null ? "–" : fmt(r.reward)), h("span", null, r.turns ?? "–"),
      h("span", { class: "note" }, r.problem || r.error || ""));
  };
  const pick = (id, on) => {
    app.picked = app.picked.filter((p) => p !== id);
    if (on) app.picked = [...app.picked, id].slice(-2);
    compareBtn.disabled = app.picked.length !== 2;
    draw();
  };

  const draw = () => {
    spacer.style.height = `${total * ROW_H}px`;
    const first = Math.max(0, Math.floor(list.scrollTop / ROW_H) - 10);
    const last = Math.min(total, first + Math.ceil(list.clientHeight / ROW_H) + 20);
    const rows = [];
    for (let i = first; i < last; i++) {
      const page = pages.get(Math.floor(i / PAGE));
      if (!page) { load(Math.floor(i / PAGE)); continue; }
      const r = page[i % PAGE];
      if (r) rows.push(rowEl(r, i));
    }
    spacer.replaceChildren(...rows);
  };
  const loading = new Set();
  const load = async (p, recount) => {
    if (loading.has(p) && !recount) return;
    loading.add(p);
    try {
      const data = await getJSON(query(p * PAGE));
      pages.set(p, data.rows);
      total = data.total;
      count.textContent = `${total.toLocaleString()} episode${total === 1 ? "" : "s"}`;
      draw();
    } catch (err) {
      showBanner(`episodes: ${err.message}`);
    } finally {
      loading.delete(p);
    }
  };
  list.addEventListener("scroll", () => requestAnimationFrame(draw));
  setMain(main, h("h2", null, "Episodes"), bar, header, list);
  compareBtn.disabled = app.picked.length !== 2;
  renderBar().then(() => load(0, true));
  // Live follow: fetch the page on screen first, then drop the others (no flicker of empty rows);
  // the filter bar is left alone while the user is in it.
  const refresh = async () => {
    if (!bar.contains(document.activeElement)) await renderBar();
    const p = Math.floor(list.scrollTop / ROW_H / PAGE);
    const data = await getJSON(query(p * PAGE));
    pages.clear();
    pages.set(p, data.rows);
    total = data.total;
    count.textContent = `${total.toLocaleString()} episode${total === 1 ? "" : "s"}`;
    draw();
  };
  return { refresh };
}

// ---------------------------------------------------------------- one episode

function probColor(lp) {
  if (lp === null || lp === undefined) return "transparent";
  const p = Math.exp(lp);  // 1: green (sure), 0: red (unlikely)
  return `hsl(${Math.round(120 * p)}, 70%, ${Math.round(82 - 10 * p)}%)`;
}

function tokenView(t) {
  if (!t) return null;
  const turnStarts = new Set(t.turn_starts);
  const cuts = new Map(t.cuts.map((c) => [c.at, c]));
  const spans = [];
  for (let i = 0; i < t.ids.length; i++) {
    if (turnStarts.has(i)) spans.push(h("span", { class: "turn-mark", title: "a turn starts" }, "▸"));
    const model = t.model[i];
    const kind = model ? "tok-model" : t.prompt_length !== null && i < t.prompt_length ? "tok-prompt" : "tok-env";
    const lp = t.logprobs[i];
    const title = `#${i} id ${t.ids[i]}` + (model && lp !== null ? ` · log-prob ${lp.toFixed(3)} · p ${Math.exp(lp).toFixed(3)}` : model ? "" : kind === "tok-prompt" ? " · prompt" : " · environment");
    spans.push(h("span", { class: `tok ${kind}`, title, style: model ? `background:${probColor(lp)}` : null }, t.pieces[i]));
    if (cuts.has(i)) spans.push(h("span", { class: "cut", title: cuts.get(i).why }, `✂ ${cuts.get(i).budget}`));
  }
  return h("section", { class: "tokens", id: "token-view" },
    h("h3", null, `Tokens (${t.total.toLocaleString()})`),
    h("div", { class: "legend" },
      h("span", { class: "tok tok-prompt" }, "prompt"), h("span", { class: "tok tok-env" }, "environment"),
      h("span", { class: "tok tok-model", style: `background:${probColor(0)}` }, "model, p≈1"),
      h("span", { class: "tok tok-model", style: `background:${probColor(Math.log(0.5))}` }, "p≈0.5"),
      h("span", { class: "tok tok-model", style: `background:${probColor(Math.log(0.05))}` }, "p≈0.05"),
      h("span", { class: "cut", title: "a turn used all its turn_tokens, or the episode_tokens budget ended the episode" }, "✂ where a budget cut (hover for why)"),
      t.decoded ? null : h("span", { class: "hint" }, "no tokenizer found: token ids shown (--tokenizer PATH)")),
    h("div", { class: "token-text" }, spans));
}

// "test task 7 (group 7)" from an episode's task object.
function taskLabel(task) {
  if (!task || typeof task !== "object") return null;
  const what = task.index !== undefined ? `task ${task.index}` : task.seed !== undefined ? `seed ${task.seed}` : "";
  return [task.split, what].filter(Boolean).join(" ") + (task.group !== undefined ? ` (group ${task.group})` : "");
}

function episodePanel(e, opts) {
  const s = e.summary;
  const fullLink = e.notes.some((n) => n.includes("showing the first")) && !(opts && opts.full)
    ? h("a", { href: `#episode/${e.id}?full=1` }, "show everything") : null;
  const head = h("div", { class: "episode-head" },
    h("div", { class: "title" }, h("span", { class: "swatch", style: `background:${runColor(s.run)}` }),
      [e.run_name, s.step !== null ? `step ${s.step}` : null, e.env ?? s.env, taskLabel(e.task)].filter(Boolean).join(" · ")),
    h("div", { class: "where" }, `${e.file}:${e.line}`),
    h("dl", null, [
      ["success", yesNo(e.success ?? s.success)], ["score", cell(e.score)], ["reward", cell(e.reward)], ["finish", e.finish || "–"],
      ["turns", e.turns ? `${e.turns.length} of ${e.max_turns ?? "?"}` : "–"], e.model ? ["model", cell(e.model)] : null,
      e.error ? ["error", e.error] : null, e.error_kind ? ["error kind", e.error_kind] : null,
      e.usage ? ["usage", cell(e.usage)] : null, e.sampling ? ["sampling", cell(e.sampling)] : null,
      typeof e.seconds === "number" ? ["seconds", cell(e.seconds)] : null,
    ].filter(Boolean).map(([k, v]) => [h("dt", null, k), h("dd", { class: k === "success" ? (e.success ? "ok" : "fail") : null }, v)])));
  if (e.unreadable) {
    return h("div", { class: "episode" }, head,
      h("div", { class: "problem" }, e.problem || "this line is not a JSON episode"),
      h("h3", null, `The line as it is (${e.raw_length.toLocaleString()} bytes)`), h("pre", { class: "raw" }, e.raw), notesBox(e.notes), fullLink);
  }
  const turns = e.turns.map((t, i) => t.problem ? h("div", { class: "turn problem" }, t.problem) : h("div", { class: "turn", "data-turn": i + 1 },
    h("div", { class: "turn-head" }, `Turn ${i + 1}`, h("span", { class: "reward" }, `reward ${cell(t.reward)}`),
      t.metrics ? h("span", { class: "metrics" }, Object.entries(t.metrics).map(([k, v]) => `${k} ${cell(v)}`).join(" · ")) : null),
    h("div", { class: "label" }, "action (model)"), h("pre", { class: "action" }, t.action === "" ? h("span", { class: "hint" }, "(empty)") : t.action ?? "–"),
    h("div", { class: "label" }, "observation (environment)"), h("pre", { class: "observation" }, t.observation ?? "–"),
    t.images.length ? h("div", { class: "images" }, t.images.map((src) => h("img", { src, alt: `turn ${i + 1} image` }))) : null,
    Object.keys(t.other).length ? h("div", { class: "unknown" }, Object.entries(t.other).map(([k, v]) => [h("div", { class: "label" }, `${k} (field this viewer does not know)`), h("pre", null, v)])) : null));
  return h("div", { class: "episode" }, head,
    e.problem ? h("div", { class: "problem" }, e.problem) : null,
    notesBox(e.notes), fullLink,
    e.prompt !== null && e.prompt !== undefined ? [h("div", { class: "label" }, "first observation (prompt)"), h("pre", { class: "observation prompt" }, e.prompt)] : null,
    h("div", { class: "turns", id: opts && opts.compare ? null : "turns" }, turns),
    opts && opts.compare ? null : tokenView(e.tokens),
    Object.keys(e.unknown).length ? h("section", { class: "unknown" }, h("h3", null, "Fields this viewer does not know"),
      Object.entries(e.unknown).map(([k, v]) => [h("div", { class: "label" }, k), h("pre", null, v)])) : null,
    e.messages ? h("details", null, h("summary", null, "messages (the conversation as chat messages)"), h("pre", null, e.messages)) : null,
    e.text ? h("details", null, h("summary", null, "rendered text (the model's view)"), h("pre", null, e.text)) : null);
}

function episodeView(main, id, params) {
  const full = params.get("full") === "1";
  const render = async () => {
    let e;
    try {
      e = await getJSON(`/api/episode/${encodeURIComponent(id)}${full ? "?full=1" : ""}`);
    } catch (err) {
      setMain(main, h("div", { class: "problem" }, `cannot open episode ${id}: ${err.message}`));
      return;
    }
    const same = h("div", { class: "same-task" });
    setMain(main, h("p", null, h("a", { href: "#episodes" }, "← episodes")), episodePanel(e, { full }), same);
    const s = e.summary;
    if (s.task !== null || s.seed !== null) {
      const q = new URLSearchParams({ run: "all", env: s.env, limit: 50 });
      if (s.split) q.set("split", s.split);
      if (s.task !== null) q.set("task", s.task);
      const others = (await getJSON(`/api/episodes?${q}`)).rows.filter((r) => r.id !== id && (s.task !== null || r.seed === s.seed));
      same.replaceChildren(h("h3", null, "Same task elsewhere: compare side by side"),
        others.length ? h("ul", null, others.map((r) => h("li", null,
          h("a", { href: `#compare/${id}/${r.id}`, class: "compare-link" }, `${runName(r.run)} · step ${r.step ?? "–"} · ${yesNo(r.success)} ${r.finish}`)))) : h("p", { class: "hint" }, "none"));
    }
  };
  render();
  return { refresh: null };  // an episode does not change once written
}

function compareView(main, a, b) {
  (async () => {
    try {
      const [ea, eb] = await Promise.all([a, b].map((id) => getJSON(`/api/episode/${encodeURIComponent(id)}`)));
      setMain(main, h("p", null, h("a", { href: "#episodes" }, "← episodes")), h("h2", null, "Side by side"),
        h("div", { class: "compare", id: "compare-view" }, episodePanel(ea, { compare: true }), episodePanel(eb, { compare: true })));
    } catch (err) {
      setMain(main, h("div", { class: "problem" }, `cannot open these episodes: ${err.message}`));
    }
  })();
  return { refresh: null };
}

// ---------------------------------------------------------------- routing and live follow

function route() {
  const { parts, params } = parseHash();
  const main = document.getElementById("main");
  const tab = parts[0];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === tab || (tab === "episode" || tab === "compare") && a.dataset.tab === "episodes");
  if (!app.state) return;
  showBanner("");
  if (tab === "curves") app.view = curvesView(main);
  else if (tab === "evals") app.view = evalsView(main);
  else if (tab === "episodes") app.view = episodesView(main, params);
  else if (tab === "episode") app.view = episodeView(main, parts.slice(1).join("/"), params);
  else if (tab === "compare") app.view = compareView(main, parts[1], parts[2]);
  else app.view = runsView(main);
}

async function poll() {
  try {
    const state = await getJSON("/api/state");
    const first = app.state === null;
    app.state = state;
    const live = document.getElementById("live");
    const episodes = state.runs.reduce((n, r) => n + r.episodes, 0);
    live.textContent = `${state.indexed ? "● following" : "◌ indexing…"} · ${state.runs.length} run${state.runs.length === 1 ? "" : "s"} · ${episodes.toLocaleString()} episodes`;
    if (first) route();
    else if (state.generation !== app.generation && app.view && app.view.refresh) await app.view.refresh();
    app.generation = state.generation;
  } catch (err) {
    document.getElementById("live").textContent = `○ viewer not reachable (${err.message})`;
  }
  setTimeout(poll, app.state && !app.state.indexed ? POLL_MS / 5 : POLL_MS);  // sooner while the first index is built
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (e) => showBanner(String(e.reason && e.reason.message || e.reason)));
poll();
