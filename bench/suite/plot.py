"""Latency vs concurrent sessions, drawn from the bench's JSON figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_SERIES = (
    ("gymwire", "gymwire msgpack, closed loop", "tab:blue"),
    ("gymwire_batch", "gymwire msgpack, step_batch per connection", "tab:purple"),
    ("gymwire_gc_tuned", "gymwire msgpack, server GC tuned", "tab:orange"),
    ("gymwire_paced", "gymwire msgpack, paced (same total rate)", "tab:green"),
    ("http", "HTTP/JSON FastAPI, closed loop", "tab:red"),
)


def plot_latency(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency_ax, rate_ax) = plt.subplots(1, 2, figsize=(10, 5.5), dpi=80)
    for key, label, color in _SERIES:
        # A level where steps failed or none finished in the window did not hold: it is left out.
        rows = [r for r in results["concurrency"].get(key, []) if "p99_ms" in r and r["steps_per_s"] and not r["errors"]]
        if not rows:
            continue
        sessions = [r["sessions"] for r in rows]
        latency_ax.plot(sessions, [r["p99_ms"] for r in rows], "o-", color=color, label=f"{label} p99")
        latency_ax.plot(sessions, [r["p50_ms"] for r in rows], "x--", color=color, alpha=0.6, label=f"{label} p50")
        rate_ax.plot(sessions, [r["steps_per_s"] for r in rows], "o-", color=color, label=label)
    latency_ax.axhline(50, color="gray", linestyle=":", label="50 ms target")
    latency_ax.set(xscale="log", yscale="log", xlabel="concurrent sessions", ylabel="step latency (ms)",
                   title="Step latency")
    rate_ax.set(xscale="log", yscale="log", xlabel="concurrent sessions", ylabel="steps/s (all sessions)",
                title="Aggregate throughput")
    m = results["machine"]
    rate = results["plan"]["paced_rate"]
    fig.suptitle(
        f"no-op env, server + 2 client processes on {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}; "
        f"paced: {rate:g} steps/s in all",
        fontsize=9,
    )
    latency_ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    rate_ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_sessions(results: dict[str, Any], path: Path) -> None:
    """Share of 1 s steps answered within 2 s, and server memory per session, against sessions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (share_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 5), dpi=80)
    for shape, label, color in (("multiplexed", "many sessions per connection", "tab:blue"),
                                ("per_connection", "one connection per session", "tab:red")):
        rows = [r for r in results["sessions"][shape]["rows"] if "failure" not in r]
        if not rows:
            continue
        sessions = [r["sessions"] for r in rows]
        share_ax.plot(sessions, [100 * r["answered_within_2s"] for r in rows], "o-", color=color, label=label)
        memory_ax.plot(sessions, [r["server_kib_per_session"] for r in rows], "o-", color=color, label=label)
    share_ax.axhline(95, color="gray", linestyle=":", label="95%")
    share_ax.set(xlabel="concurrent sessions", ylabel="% of 1 s steps answered within 2 s", ylim=(0, 105),
                 title="Sessions at 1-second steps")
    memory_ax.set(xlabel="concurrent sessions", ylabel="server RSS added per session (KiB)", title="Memory per session")
    m = results["machine"]
    fig.suptitle(f"{m['nproc']} cores, load average {m['loadavg_start'][0]} (shared machine); "
                 f"{results['sessions']['server_workers']} server processes on one port, "
                 f"transport {results['sessions'].get('transport', 'websockets')}", fontsize=9)
    share_ax.legend(fontsize=8)
    memory_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
