"""`gymwire bench`: argument parsing and the printed report. Imports nothing heavy until run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure round trips, concurrency, memory and batching against raw TCP and HTTP baselines",
        description="Benchmark gymwire on this machine against a raw TCP floor and an AgentGym-style "
        "HTTP/JSON server; print the figures and write them as JSON. Needs 'gymwire[bench]'.",
    )
    bench.add_argument("--quick", action="store_true", help="tiny sizes, every section (about 15 s)")
    bench.add_argument("--sessions", action="store_true",
                       help="instead: the most sessions at 1 s steps with >= 95%% answered within 2 s, many per "
                       "connection and one connection per session (OpenEnv's measure), and the round trip beside "
                       "the asyncio TCP floor, side by side in one run")
    bench.add_argument("--server-workers", type=int, default=2, metavar="N",
                       help="--sessions: server processes sharing the port with SO_REUSEPORT (default 2)")
    bench.add_argument("--transport", choices=["picows", "websockets"],
                       help="--sessions: the server's and the load's transport (default picows on uvloop when "
                       "gymwire[fast] is installed, else websockets)")
    bench.add_argument("--json", type=Path, default=Path("runs", "bench", "gymwire-bench.json"), metavar="PATH",
                       help="where to write the figures (default runs/bench/gymwire-bench.json)")
    bench.add_argument("--plot", type=Path, metavar="PATH", help="also draw latency vs concurrent sessions to this PNG")
    bench.add_argument("--paced-rate", type=float, default=1000.0, metavar="STEPS_PER_S",
                       help="total steps/s all sessions offer together in the paced runs (default 1000)")
    bench.add_argument("--nice", type=int, metavar="N",
                       help="run the bench and its child processes at this niceness (negative needs root): "
                       "on a machine shared with other jobs, keeps their load out of the figures")
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from gymwire.sdk.environment import require_modules

    # Checked before anything starts: the HTTP baseline runs in child processes.
    require_modules(["fastapi", "uvicorn", "aiohttp"], "bench", "gymwire bench")
    from .run import Plan, run

    restore_autogroup = None
    if args.nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # children are forked: they inherit it
            restore_autogroup = set_autogroup_nice(args.nice)
        except PermissionError:
            print(f"gymwire bench: niceness {args.nice} needs root; run without --nice", file=sys.stderr)
            return 2
    plan = Plan.quick(args.paced_rate) if args.quick else Plan.full(args.paced_rate)
    try:
        if args.sessions:
            from dataclasses import replace

            from .run import fast_transport_installed, run_sessions_bench
            from .sessions import SessionsPlan

            transport = args.transport or ("picows" if fast_transport_installed() else "websockets")
            if transport == "picows":
                require_modules(["picows", "uvloop"], "fast", "gymwire bench --transport picows")
            sessions_plan = SessionsPlan.quick() if args.quick else SessionsPlan.full()
            results = run_sessions_bench(plan, replace(sessions_plan, server_workers=args.server_workers, transport=transport))
        else:
            results = run(plan)
    finally:
        if restore_autogroup is not None:
            set_autogroup_nice(restore_autogroup)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(sessions_report(results) if args.sessions else report(results))
    print(f"\nfigures written to {args.json}")
    if args.plot:
        from .plot import plot_latency, plot_sessions

        (plot_sessions if args.sessions else plot_latency)(results, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def set_autogroup_nice(nice: int) -> int | None:
    """With autogroup scheduling (most Linux kernels) CPU is shared fairly between sessions first,
    and a process's niceness only counts inside its own session: set the session's niceness too.
    Returns the niceness it had, to restore (the session outlives the bench), or None."""
    autogroup = Path("/proc/self/autogroup")
    if not autogroup.exists():
        return None
    before = int(autogroup.read_text().split("nice")[-1])
    autogroup.write_text(str(nice))
    return before


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        (
            f"machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}; "
            f"load average {m['loadavg_start'][0]} at start, {m['loadavg_end'][0]} at end; gymwire {m['gymwire_commit']}"
        ),
        "",
    ]
    lines.append("1. sequential step round trip (us)          p50      mean       p99")
    for label, row in results["roundtrip"].items():
        if label not in ("ratios_p50", "placed"):
            lines.append(f"   {label:36} {row['p50_us']:>8} {row['mean_us']:>9} {row['p99_us']:>9}")
    for label, ratio in results["roundtrip"]["ratios_p50"].items():
        lines.append(f"   {label:48} {ratio}x")
    lines.append(roundtrip_ratio_line(results))
    lines.extend(placed_lines(results))
    lines.append("\n2a. pipelined over one connection")
    for row in results["pipelined"]:
        lines.append(f"   {row['in_flight']:>6} in flight: {row['steps_per_s']:>8} steps/s")
    lines.append("\n2b. concurrent sessions   sessions think ms  steps/s   p50 ms   p99 ms errors  CPU us/step server client")
    for kind, rows in results["concurrency"].items():
        for row in rows:
            lines.append(
                f"   {kind:20} {row['sessions']:>8} {row['think_ms']:>8} {row['steps_per_s']:>8} "
                f"{row.get('p50_ms', '-'):>8} {row.get('p99_ms', '-'):>8} {row['errors']:>6} "
                f"{row['server_cpu_us_per_step'] or '-':>18} {row.get('client_cpu_us_per_step', '-'):>6}"
            )
    mem = results["memory"]
    lines.append("\n3. server memory (bytes; traced = Python allocations, rss = resident set)")
    for key in ("per_idle_session", "per_session_after_one_step", "per_connection"):
        lines.append(f"   {key:28} traced {mem[key]['traced_bytes']:>8}   rss {mem[key]['rss_bytes']:>8}")
    lines.append("\n4. connect to first observation (us)      p50      p99")
    for label, row in results["first_observation"].items():
        lines.append(f"   {label:36} {row['p50_us']:>8} {row['p99_us']:>8}")
    b = results["batching"]
    lines.append(f"\n5. batches of {b['batch_size']}: step_batch {b['step_batch_steps_per_s']} steps/s, "
                 f"concurrent singles {b['concurrent_single_steps_per_s']}, sequential {b['sequential_single_steps_per_s']} "
                 f"({b['batch_vs_concurrent_singles']}x / {b['batch_vs_sequential_singles']}x)")
    lines.append("\ntargets")
    for name, t in results["targets"].items():
        lines.append(f"   {name:36} {t['value']:>10}  target {t['target']:<8} {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def sessions_report(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["sessions"]
    lines = [
        f"machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}; load average "
        f"{m['loadavg_start'][0]} at start, {m['loadavg_end'][0]} at end (other work shares the cores); "
        f"gymwire {m['gymwire_commit']}",
        "",
        f"sessions at 1 s steps ({s['server_workers']} server processes on one port, {s['load_workers']} load processes, "
        f"transport {s.get('transport', 'websockets')})",
        "   shape            sessions connections  within 2 s   p50 s   p99 s  server KiB/session",
    ]
    for shape in ("multiplexed", "per_connection"):
        for row in s[shape]["rows"]:
            if "failure" in row:
                lines.append(f"   {shape:16} {row['sessions']:>8}  failed: {row['failure']}")
                continue
            lines.append(
                f"   {shape:16} {row['sessions']:>8} {row['connections']:>11} {row['answered_within_2s']:>10.1%} "
                f"{row['p50_s']:>7} {row['p99_s']:>7} {row['server_kib_per_session']:>19}"
            )
    def most(shape: str) -> str:
        rows = s[shape]["rows"]
        held = s[shape]["max_sessions"]
        # Every level held: the limit lies above the sweep.
        return f"{held} or more" if rows and held == rows[-1]["sessions"] else f"{held}"

    lines.append(
        f"   most sessions with >= 95% within 2 s: {most('multiplexed')} multiplexed, "
        f"{most('per_connection')} one connection per session"
    )
    r = results["roundtrip"]
    lines.append("\nsequential step round trip, side by side (us)    p50      p99")
    for label in ("tcp_floor_asyncio", "websockets_echo", "picows_echo", "gymwire_msgpack", "gymwire_json",
                  "gymwire_picows_msgpack", "gymwire_picows_json", "http_fastapi"):
        if label in r:
            lines.append(f"   {label:40} {r[label]['p50_us']:>8} {r[label]['p99_us']:>8}")
    lines.append(roundtrip_ratio_line(results))
    lines.extend(placed_lines(results))
    first = results.get("first_observation")
    if first:
        lines.append("\nconnect to first observation (us)              p50      p99")
        for label, row in first.items():
            lines.append(f"   {label:40} {row['p50_us']:>8} {row['p99_us']:>8}")
    return "\n".join(lines)


def placed_lines(results: dict[str, Any]) -> list[str]:
    """The fast transport's round trips pinned to one core and to two, each beside its own floor."""
    placed = results["roundtrip"].get("placed") or {}
    lines = []
    for placement, row in placed.items():
        ratios = row["ratios_p50"]
        lines.append(
            f"   pinned to {placement.replace('_', ' ')}: asyncio TCP floor {row['tcp_floor_asyncio']['p50_us']}, "
            f"picows echo {row['picows_echo']['p50_us']}, gymwire msgpack {row['gymwire_picows_msgpack']['p50_us']} "
            f"({ratios['gymwire_picows_msgpack_vs_tcp_floor_asyncio']}x the floor), json "
            f"{row['gymwire_picows_json']['p50_us']} (msgpack/json {ratios['gymwire_picows_msgpack_vs_json']})"
        )
    return lines


def roundtrip_ratio_line(results: dict[str, Any]) -> str:
    """The issue's figure: the step round trip over the asyncio TCP floor, and msgpack against JSON."""
    ratios = results["roundtrip"]["ratios_p50"]
    parts = [f"websockets {ratios['gymwire_msgpack_vs_tcp_floor_asyncio']}x (msgpack/json {ratios['gymwire_msgpack_vs_json']})"]
    if "gymwire_picows_msgpack_vs_tcp_floor_asyncio" in ratios:
        parts.insert(0, f"picows {ratios['gymwire_picows_msgpack_vs_tcp_floor_asyncio']}x "
                        f"(msgpack/json {ratios['gymwire_picows_msgpack_vs_json']})")
    return "   round-trip ratio, gymwire msgpack / asyncio TCP floor (p50): " + "; ".join(parts)
