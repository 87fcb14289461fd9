"""The random-frame mix of bench/protocol_codec.py, at test size: decoders raise nothing untyped."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "protocol_codec.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("protocol_codec_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bench_frame_mix_gives_only_typed_errors_and_some_successes():
    report = load_bench().fuzz_decoders(4_000, seed=7)
    assert report["untyped_exceptions"] == 0, report["untyped_examples"]
    assert report["successes"] + report["typed_errors"] == 4_000
    assert set(report["by_kind"]) == {"random_bytes", "mutated_valid", "random_structure", "message_shaped"}
    assert report["successes"] > 0 and report["typed_errors_by_code"].get("UNKNOWN_MESSAGE", 0) > 0
