"""Peak memory of the reference trainer's update against batch size and micro-batch size, before
and after micro-batching, measured side by side in one run on the same model and episodes.

- before: the update as it was up to gymwire b892a0b: the whole minibatch in one forward and
  backward, full-vocabulary logits at every position kept for backward (re-enacted below with the
  trainer's own losses, its log-prob and entropy loops as they were);
- after: `Trainer.update` itself, the minibatch in one micro-batch and in micro-batches of
  `--micro-rows` episodes (and of as many padded tokens), the LM head only at action positions.

Episodes are synthetic (tests/trainers/tensor_memory.py): `--length` tokens each, 3/8 of them
action tokens over 4 turns. The model is a random Llama (SmolLM2's architecture) of the shape
asked: `--shape small` (CPU default) or `--shape smollm2` (SmolLM2-135M's shape: 30 layers,
hidden 576, vocabulary 49,152; for a GPU). Memory is the peak above the resting model and optimizer
state: on CUDA `torch.cuda.max_memory_allocated`, on CPU the bytes of the tensors the update
creates (tensor_memory.TensorMemory), which is what scales with the batch. On CUDA the total peak
(model and optimizer included) is printed too.

    python bench/update_memory.py                                   # CPU, small model
    python bench/update_memory.py --shape smollm2 --device cuda --batches 16 64 128 --length 768
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "trainers"))
from tensor_memory import TensorMemory, synthetic_episodes  # noqa: E402

from gymwire.trainers.models.hf_policy import autocast_for  # noqa: E402
from gymwire.trainers.models.tiny import build_tokenizer  # noqa: E402
from gymwire.trainers.train.config import TrainConfig  # noqa: E402
from gymwire.trainers.train.losses import masked_mean, policy_loss  # noqa: E402
from gymwire.trainers.train.scoring import TrainBatch  # noqa: E402
from gymwire.trainers.train.trainer import Trainer  # noqa: E402

SHAPES = {
    "small": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocabulary": 8192},
    "smollm2": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "vocabulary": 49152},
}
MIB = 2**20


def build_model(folder: Path, shape: dict[str, int], length: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    # A word-level tokenizer whose vocabulary is about the shape's: the numbers with and without a space.
    tokenizer = build_tokenizer([], numbers=shape["vocabulary"] // 2)
    dims = {key: value for key, value in shape.items() if key != "vocabulary"}
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=max(length, 64), tie_word_embeddings=True,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **dims)
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _old_token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # As trainers/train/losses.py had it: one sequence at a time over the full logits.
    valid = labels >= 0
    rows = []
    for row, row_labels in zip(logits, torch.where(valid, labels, 0)):
        row = row if row.dtype in (torch.float32, torch.float64) else row.float()
        rows.append(row.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1))
    out = torch.stack(rows)
    return torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=out.device))


def _old_entropy(logits: torch.Tensor) -> torch.Tensor:
    rows = []
    for row in logits:
        row = row.float()
        rows.append(torch.logsumexp(row, dim=-1) - (torch.softmax(row, dim=-1) * row).sum(-1))
    return torch.stack(rows)


def before_update(trainer: Trainer, episodes: list) -> None:
    """The old update of one minibatch (GRPO, no KL): score in chunks of 64 rows, then one forward
    and backward of the whole minibatch with full logits, then the optimizer step."""
    batch = TrainBatch.from_episodes(episodes, trainer.tokenizer.pad_token_id or 0, trainer.device)
    temperature = trainer.config.rollout.temperature

    def logits_of(rows: torch.Tensor) -> torch.Tensor:
        with autocast_for(trainer.device):
            return trainer.model(input_ids=batch.input_ids[rows], attention_mask=batch.attention[rows]).logits[:, :-1]

    trainer.model.eval()
    with torch.no_grad():
        chunks = torch.arange(len(episodes), device=trainer.device).split(64)
        old = torch.cat([_old_token_logprobs(logits_of(rows) / temperature, batch.labels[rows]) for rows in chunks])
    trainer.model.train()
    rows = torch.arange(len(episodes), device=trainer.device)
    logits = logits_of(rows) / temperature
    logprobs = _old_token_logprobs(logits, batch.labels)
    advantages = torch.randn(batch.action_mask.shape, device=trainer.device)
    loss, _ = policy_loss(logprobs, old, advantages, batch.action_mask)
    loss = loss - 0.01 * masked_mean(_old_entropy(logits), batch.action_mask)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainer.optimizer.step()


def measure(trainer: Trainer, run: Callable[[], Any]) -> dict[str, float]:
    """Peak MiB above what is allocated before `run`, and its seconds (on CPU from a second run
    without the memory tracker)."""
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        resting = torch.cuda.memory_allocated(device)
        started = time.perf_counter()
        run()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mib": (peak - resting) / MIB, "total_peak_mib": peak / MIB, "seconds": seconds}
    started = time.perf_counter()
    run()  # timed alone: the tracker's Python call per operator would be most of the time
    seconds = time.perf_counter() - started
    with TensorMemory() as memory:
        run()
    return {"peak_mib": memory.peak / MIB, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 64], help="episodes per minibatch")
    parser.add_argument("--micro-rows", type=int, default=8, help="episodes per micro-batch")
    parser.add_argument("--length", type=int, default=256, help="tokens per episode")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="also measure micro-batches with it on")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    shape = SHAPES[args.shape]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch, "model")
        build_model(folder, shape, args.length)
        config = TrainConfig.from_dict({
            "output_dir": str(Path(scratch, "run")),
            "model": {"path": str(folder), "device": args.device, "threads": args.threads,
                      "gradient_checkpointing": args.gradient_checkpointing},
            "env": {"name": "guess"},  # only for the trainer's setup: the episodes are synthetic
            "rollout": {"tasks_per_step": 1, "group_size": 4, "episode_tokens": args.length},
            "algorithm": {"entropy_coef": 0.01},
            "train": {"progress": False},
        })
        with Trainer(config) as trainer:
            vocabulary = len(trainer.tokenizer)
            device = trainer.device
            print(f"update memory, {args.shape} Llama (vocabulary {vocabulary}, hidden {shape['hidden_size']}, "
                  f"{shape['num_hidden_layers']} layers) on {device}; episodes of {args.length} tokens"
                  + (", gradient checkpointing on" if args.gradient_checkpointing else ""), flush=True)
            algorithm = trainer.config.algorithm
            trainer.update(synthetic_episodes(4, args.length, vocabulary))  # the optimizer's state exists from here on
            for rows in args.batches:
                episodes = synthetic_episodes(rows, args.length, vocabulary)

                def after(micro_rows: int | None, micro_tokens: int | None) -> Callable[[], Any]:
                    def run() -> None:
                        algorithm.micro_batch_rows, algorithm.micro_batch_tokens = micro_rows, micro_tokens
                        trainer.update(episodes)
                    return run

                row: dict[str, Any] = {"batch": rows}
                for label, run in (
                    ("before", lambda: before_update(trainer, episodes)),
                    ("after_one_micro_batch", after(None, None)),
                    (f"after_micro_{args.micro_rows}_rows", after(args.micro_rows, None)),
                    (f"after_micro_{args.micro_rows * args.length}_tokens", after(None, args.micro_rows * args.length)),
                ):
                    try:
                        row[label] = measure(trainer, run)
                    except torch.OutOfMemoryError:
                        row[label] = None
                        torch.cuda.empty_cache()
                    print(f"  batch {rows:4d}  {label:28s} " + _figures(row[label]), flush=True)
                results.append(row)
    micro = f"after_micro_{args.micro_rows}_rows"
    print(f"\npeak MiB of one update (above the resting model and optimizer state), {device}:")
    print(f"{'batch':>6} {'before':>10} {'after, 1 micro':>15} {f'after, micro {args.micro_rows}':>16} {'before/after':>13}")
    for row in results:
        before, whole, split = (row[k] and row[k]["peak_mib"] for k in ("before", "after_one_micro_batch", micro))
        ratio = f"{before / split:.1f}x" if before and split else "-"
        print(f"{row['batch']:>6} {_mib(before):>10} {_mib(whole):>15} {_mib(split):>16} {ratio:>13}")
    if args.json:
        args.json.write_text(json.dumps({"shape": args.shape, "device": str(device), "length": args.length,
                                         "micro_rows": args.micro_rows, "results": results}, indent=2))


def _mib(value: float | None) -> str:
    return "OOM" if value is None else f"{value:.1f}"


def _figures(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "out of memory"
    total = f", total {figures['total_peak_mib']:.0f} MiB" if "total_peak_mib" in figures else ""
    return f"peak {figures['peak_mib']:8.1f} MiB{total}, {figures['seconds']:.2f} s"


if __name__ == "__main__":
    main()
