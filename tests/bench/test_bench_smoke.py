"""`gymwire bench --quick` runs end to end and writes figures with every expected key.

Only that it runs and reports: the figures themselves are machine-dependent and belong in
BENCHMARKS.md, not in assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SECTIONS = {"machine", "roundtrip", "pipelined", "concurrency", "memory", "first_observation", "batching", "targets"}


def test_quick_bench_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    plot = tmp_path / "latency.png"
    run = subprocess.run(
        [sys.executable, "-m", "gymwire.sdk.cli", "bench", "--quick", "--json", str(out), "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert SECTIONS <= results.keys()

    roundtrip = results["roundtrip"]
    for label in ("tcp_floor_asyncio", "tcp_floor_blocking", "gymwire_msgpack", "gymwire_json", "http_fastapi"):
        assert roundtrip[label]["count"] == results["plan"]["roundtrips"]
        assert 0 < roundtrip[label]["p50_us"] <= roundtrip[label]["p99_us"]
    assert roundtrip["ratios_p50"]["gymwire_msgpack_vs_tcp_floor_asyncio"] > 0
    # The fast transport pinned to one core and to two (CI installs gymwire[fast]; a one-core
    # machine has only the first placement to offer, so none is measured there).
    placements = {"one_core", "two_cores"} if len(os.sched_getaffinity(0)) >= 2 else set()
    assert set(roundtrip["placed"]) == placements
    for row in roundtrip["placed"].values():
        for label in ("tcp_floor_asyncio", "picows_echo", "gymwire_picows_msgpack", "gymwire_picows_json"):
            assert row[label]["count"] == results["plan"]["roundtrips"] and row[label]["p50_us"] > 0
        assert row["ratios_p50"]["gymwire_picows_msgpack_vs_tcp_floor_asyncio"] > 0
    if placements:
        assert "pinned to two cores: asyncio TCP floor" in run.stdout

    for kind in ("gymwire", "gymwire_paced", "http"):
        rows = results["concurrency"][kind]
        assert rows, kind
        for row in rows:
            assert row["errors"] == 0, (kind, row)
            assert row["sessions_opened"] == row["sessions"]
            assert row["steps_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0

    assert all(row["steps_per_s"] > 0 for row in results["pipelined"])
    memory = results["memory"]
    for key in ("per_idle_session", "per_session_after_one_step", "per_connection"):
        assert set(memory[key]) == {"traced_bytes", "rss_bytes"}
    assert memory["per_idle_session"]["traced_bytes"] > 0
    assert results["first_observation"]["gymwire_msgpack"]["count"] == results["plan"]["first_obs"]
    assert results["batching"]["step_batch_steps_per_s"] > 0
    assert {"roundtrip_vs_tcp_floor", "idle_session_bytes"} <= results["targets"].keys()
    assert all(isinstance(t["met"], bool) for t in results["targets"].values())
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert "targets" in run.stdout


def test_quick_sessions_bench_prints_the_sessions_figures_and_the_round_trip_ratio(tmp_path: Path) -> None:
    out = tmp_path / "sessions.json"
    plot = tmp_path / "sessions.png"
    run = subprocess.run(
        [sys.executable, "-m", "gymwire.sdk.cli", "bench", "--sessions", "--quick", "--json", str(out), "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    for shape in ("multiplexed", "per_connection"):
        rows = results["sessions"][shape]["rows"]
        assert rows and all("failure" not in row and row["errors"] == 0 for row in rows), rows
        assert all(row["server_sessions"] == row["sessions"] and row["steps_judged"] > 0 for row in rows)
        # A 1 s step is never answered sooner than 1 s: the environment really waited.
        assert all(row["p50_s"] >= 1.0 for row in rows)
    assert results["roundtrip"]["ratios_p50"]["gymwire_msgpack_vs_tcp_floor_asyncio"] > 0
    assert "most sessions with >= 95% within 2 s" in run.stdout and "asyncio TCP floor" in run.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
