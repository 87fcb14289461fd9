"""Rollout speed of the transformers policy, and where a training step's time goes.

1. **generation**: a rollout of `--episodes` episodes x `--turns` turns x `--turn-tokens`
   generated tokens (no stop token: every turn generates them all), each turn followed by a
   fixed environment answer rendered by the chat template, played by the policy without a server
   so that only generation is timed. Generated tokens/s for:
   - `kept caches`: TransformersPolicy (its own decoding loop, each episode's cache kept between turns);
   - `no reuse`: the same loop encoding every prompt in full (reuse_cache=False);
   - `before`: the previous implementation, `model.generate` with `output_scores` and the
     full-vocabulary scores copied to the CPU, every prompt in full;
   - `plain generate`: `model.generate` alone, no log-probs, on the very same prompts, batch and
     token counts, turn by turn: the reference the ratios divide by.
2. **trainer step**: `--steps` GRPO steps of examples/guess-tiny.yaml's settings (changed with
   `--set KEY=VALUE`, as `gymwire train --set`) on the embedded guess server, per step split into
   rollout / scoring (the update's log-probs of the batch under the rollout weights) / update
   (the rest), with the policy of today and with `before`.

    python bench/rollout.py                                   # tiny GPT-2, CPU: ~3 minutes here
    python bench/rollout.py --json out.json
    # the issue's GPU shape: 128 episodes x 6 turns x 48 tokens, guess 1..15
    python bench/rollout.py --model smollm2-shape --device cuda --episodes 128 --turns 6 --turn-tokens 48 \
        --steps 3 --set horizon=6 --set rollout.turn_tokens=48 --set "env.options={low: 1, high: 15, show_range: true}"

`--model smollm2-shape` is a randomly initialised Llama of SmolLM2-135M's shape (30 layers, hidden
576, 9 heads, 3 KV heads, vocabulary 49,152) with the tiny word-level tokenizer: the cost of the
real model without its weights (its ids past the tokenizer's vocabulary decode to nothing).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from gymwire.servers.guess import GuessEnv
from gymwire.trainers.chat import ChatFormat
from gymwire.trainers.models.hf_policy import TransformersPolicy
from gymwire.trainers.models.precision import autocast_for
from gymwire.trainers.models.tiny import TinyModelSpec, build_tiny_model
from gymwire.trainers.policy import Generation, PolicyBackend, Sampling

ROOT = Path(__file__).resolve().parent.parent
FIRST = "I am thinking of a whole number from 1 to 7. Guess it. It is between 1 and 7."
ANSWER = "4 is wrong. Go higher. It is between 5 and 7."


class GenerateWithScores(PolicyBackend):
    """The policy before this benchmark's change, kept here as its baseline: `model.generate` on
    the whole prompt every call, log-probs from the full-vocabulary scores copied to the CPU."""

    def __init__(self, model: Any, pad_id: int):
        self.model = model
        self.pad_id = pad_id

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, stop_ids, sampling):
        from transformers import GenerationConfig

        device = self.model.device
        input_ids, attention = _left_padded(prompts, self.pad_id)
        if sampling.temperature == 0:
            strategy: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        else:
            strategy = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        config = GenerationConfig(
            max_new_tokens=max(max_new_tokens), **strategy, eos_token_id=list(stop_ids) or None,
            pad_token_id=self.pad_id, output_scores=True, return_dict_in_generate=True,
        )
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast_for(device):
                out = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config)
        finally:
            self.model.train(was_training)
        new_tokens = out.sequences[:, input_ids.shape[1]:].cpu()
        scores = torch.stack(out.scores).float().log_softmax(-1).cpu()
        chosen = scores.gather(-1, new_tokens.T.unsqueeze(-1)).squeeze(-1).T
        stops, generations = set(stop_ids), []
        for row, budget in enumerate(max_new_tokens):
            ids: list[int] = []
            for token in new_tokens[row, :budget].tolist():
                ids.append(token)
                if token in stops:
                    break
            generations.append(Generation(ids, chosen[row, : len(ids)].tolist(), stopped=ids[-1] in stops))
        return generations


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.tensor(prompt)
        attention[row, width - len(prompt):] = 1
    return input_ids, attention


def build_model(kind: str, folder: Path) -> Path:
    """A model folder: the tiny GPT-2 of examples/guess-tiny.yaml, or a SmolLM2-shaped random Llama."""
    corpus = [GuessEnv.instructions, FIRST, ANSWER, "Correct! The number was 4."]
    path = build_tiny_model(folder, corpus, TinyModelSpec(n_layer=2, n_head=4, n_embd=128, numbers=10, init_std=0.08))
    if kind == "smollm2-shape":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-5,
            rope_theta=100000.0, pad_token_id=0, bos_token_id=4, eos_token_id=4,
        )
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(path)  # replaces the GPT-2's config and weights
    return path


class Clock:
    """Wall and CPU seconds. On a CPU device with one torch thread, CPU seconds are the figure that
    other processes' load on a shared machine disturbs least."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> "Clock":
        _sync()
        self._started = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: Any) -> None:
        _sync()
        self.wall += time.perf_counter() - self._started[0]
        self.cpu += time.process_time() - self._started[1]


def play(policy: PolicyBackend, chat: ChatFormat, episodes: int, turns: int, turn_tokens: int) -> tuple[Clock, list[list[list[int]]]]:
    """Time of the scripted rollout, and every turn's prompts."""
    prompts = [chat.prompt(FIRST) for _ in range(episodes)]
    seen = []
    torch.manual_seed(0)
    with Clock() as clock:
        for _ in range(turns):
            seen.append(prompts)
            generations = policy.generate(prompts, [turn_tokens] * episodes, [], Sampling(1.0))
            prompts = [p + g.token_ids + chat.user_turn(ANSWER, g.token_ids, g.stopped) for p, g in zip(prompts, generations)]
        policy.release()
    return clock, seen


def plain_generate(model: Any, pad_id: int, turn_prompts: list[list[list[int]]], turn_tokens: int) -> Clock:
    """Time `model.generate` takes for the same prompts and token counts, no log-probs."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=turn_tokens, min_new_tokens=turn_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
        pad_token_id=pad_id, eos_token_id=None,
    )
    clock = Clock()
    model.eval()
    for prompts in turn_prompts:
        input_ids, attention = _left_padded(prompts, pad_id)
        with clock, torch.no_grad(), autocast_for(model.device):
            model.generate(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device), generation_config=config)
    return clock


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def generation_section(path: Path, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    chat = ChatFormat(tokenizer)
    pad = tokenizer.pad_token_id
    policies = {
        "kept caches": TransformersPolicy(model, pad),
        "no reuse": TransformersPolicy(model, pad, reuse_cache=False),
        "before": GenerateWithScores(model, pad),
    }
    tokens = args.episodes * args.turns * args.turn_tokens
    play(policies["kept caches"], chat, min(args.episodes, 8), 2, 2)  # warm-up
    clocks = {}
    for name, policy in policies.items():
        clocks[name], turn_prompts = play(policy, chat, args.episodes, args.turns, args.turn_tokens)
    clocks["plain generate"] = plain_generate(model, pad, turn_prompts, args.turn_tokens)
    timed = "cpu" if device.type == "cpu" else "wall"  # tokens/s from these seconds
    reference = getattr(clocks["plain generate"], timed)
    results = {
        name: {"wall_s": c.wall, "cpu_s": c.cpu, "tokens_per_s": tokens / getattr(c, timed), "vs_plain_generate": reference / getattr(c, timed)}
        for name, c in clocks.items()
    }
    print(f"\ngeneration: {args.episodes} episodes x {args.turns} turns x {args.turn_tokens} tokens "
          f"(prompt {len(turn_prompts[0][0])} tokens, last turn's {len(turn_prompts[-1][0])}); tokens/s from {timed} seconds")
    print(f"  {'':16} {'wall s':>7} {'cpu s':>7} {'tokens/s':>9} {'/ plain generate':>17}")
    for name, row in results.items():
        print(f"  {name:16} {row['wall_s']:7.2f} {row['cpu_s']:7.2f} {row['tokens_per_s']:9.0f} {row['vs_plain_generate']:17.2f}")
    return results


def trainer_section(path: Path | None, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    from gymwire.trainers.train.config import load_config, parse_assignments
    from gymwire.trainers.train.trainer import Trainer

    results: dict[str, Any] = {}
    for name in ("kept caches", "before"):
        with tempfile.TemporaryDirectory() as folder:
            overrides: dict[str, Any] = {
                "output_dir": folder, "train.steps": args.steps, "train.eval_every": 0, "train.checkpoint_every": 0,
                "train.rollouts_every": 0, "train.progress": False, "model.device": str(device),
            }
            if path is not None:
                overrides.update({"model.path": str(path), "model.tiny": None})
            else:
                overrides["model.path"] = str(Path(folder) / "model")
            overrides.update(parse_assignments(args.set))
            config = load_config(ROOT / "examples" / "guess-tiny.yaml", overrides)
            with Trainer(config) as trainer:
                if name == "before":
                    trainer.policy = GenerateWithScores(trainer.model, trainer.tokenizer.pad_token_id)
                scoring = _time_scoring(trainer)
                rows = []
                for _ in range(args.steps):
                    scoring.clear()
                    record = trainer.train_step()
                    score_s = sum(scoring)
                    rows.append({
                        "rollout_s": record["train/rollout_s"],
                        "scoring_s": score_s,
                        "update_s": record["train/step_s"] - record["train/rollout_s"] - score_s,
                        "step_s": record["train/step_s"],
                    })
        # The first step also builds what later ones reuse: report the mean of the others.
        later = rows[1:] or rows
        results[name] = {key: sum(r[key] for r in later) / len(later) for key in later[0]}
    changed = f" with {', '.join(args.set)}" if args.set else ""
    print(f"\ntrainer step: examples/guess-tiny.yaml settings{changed}, mean of steps 2..{args.steps}")
    print(f"  {'':12} {'rollout s':>9} {'scoring s':>9} {'update s':>9} {'step s':>8}")
    for name, row in results.items():
        print(f"  {name:12} {row['rollout_s']:9.3f} {row['scoring_s']:9.3f} {row['update_s']:9.3f} {row['step_s']:8.3f}")
    return results


def _time_scoring(trainer: Any) -> list[float]:
    """Seconds spent in the trainer's scoring pass (`Scorer.score`), appended per call."""
    spent: list[float] = []
    score = trainer.scorer.score

    def timed(*args: Any, **kwargs: Any) -> Any:
        _sync()
        started = time.perf_counter()
        try:
            return score(*args, **kwargs)
        finally:
            _sync()
            spent.append(time.perf_counter() - started)

    trainer.scorer.score = timed
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "smollm2-shape"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--turn-tokens", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="trainer steps per policy (0: skip the trainer section)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a training setting (YAML value)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (guess-tiny.yaml uses 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
    }
    with tempfile.TemporaryDirectory() as folder:
        path = build_model(args.model, Path(folder) / "model")
        report["generation"] = generation_section(path, device, args)
        if args.steps:
            report["trainer_step"] = trainer_section(path if args.model != "tiny" else None, device, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
