"""The real SmolLM2-135M-Instruct GGUF, greedy, on the same guess tasks through both backends a
user has: transformers (the GGUF dequantised) and llama.cpp's OpenAI-compatible server. With every
sampling parameter sent explicitly (no repeat penalty, no top-k or min-p cut) they play the same
actions; and each run plays again, identically, from its run.json alone (`--rerun`)."""

from __future__ import annotations

import json
from pathlib import Path

from gymwire.sdk.cli import main
from gymwire.trainers.models.local import llama_server, model_file

# Small and bounded: 3 tasks, 2 turns, 24 tokens a reply.
ARGS = ["--tasks", "3", "--max-turns", "2", "--turn-tokens", "24", "--concurrency", "1", "--no-progress"]


def actions(folder: Path) -> dict[int, list[str]]:
    lines = (folder / "episodes" / "guess.jsonl").read_text().splitlines()
    episodes = [json.loads(line) for line in lines]
    assert all(e["finish"] != "error" for e in episodes), [e["error"] for e in episodes]
    return {e["task"]["index"]: [turn["action"] for turn in e["turns"]] for e in episodes}


def test_transformers_and_llama_cpp_play_the_same_greedy_actions_and_rerun_from_metadata(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # --ubatch 1: on some sandboxed CPUs llama.cpp's batched kernels fault (see docs/eval.md).
    with llama_server(model_file("smollm2"), n_ctx=2048, ubatch=1) as url:
        assert main(["eval", "smollm2", "guess", "--base-url", url, "--output", "llama", *ARGS]) == 0
        assert main(["eval", "--rerun", "llama", "--no-progress"]) == 0
    assert main(["eval", "smollm2", "guess", "--output", "hf", *ARGS]) == 0
    capsys.readouterr()

    llama, hf = actions(tmp_path / "llama"), actions(tmp_path / "hf")
    assert len(llama) == 3 and all(len(turns) >= 1 for turns in llama.values())
    assert llama == hf
    assert actions(tmp_path / "llama-rerun") == llama

    record = json.loads((tmp_path / "llama" / "run.json").read_text())
    sent = record["request"]
    assert sent["temperature"] == 0.0 and sent["top_p"] == 1.0 and sent["seed"] == 0
    assert sent["extra_body"] == {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "repetition_penalty": 1.0}
    assert record["command"][:3] == ["eval", "smollm2", "guess"] and record["served_models"][0].startswith("SmolLM2")
    assert json.loads((tmp_path / "hf" / "run.json").read_text())["sha256"].startswith("b179c952")
