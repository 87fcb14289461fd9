"""Peak memory of `gymwire eval` with a model that rambles: does memory follow the live tokens?

A randomly initialised Llama with SmolLM2-135M's layer shape (hidden 576, 9 heads, 3 key-value
heads; `--layers` of them, 30 in SmolLM2) that never writes its stop token, so every reply uses
all of `--turn-tokens` and every history grows to `--episode-tokens`, plays `guess` (1..1000, a
turn limit no reply finds the number within) through `gymwire.trainers.eval.evaluate.evaluate` with the
transformers backend, greedy, `--concurrency` episodes at once. Prints one JSON object: the peak
resident memory of the process (ru_maxrss), the model's own size, the live key-value cache the
episodes need at their longest, and what the episodes reached.

    python bench/eval_memory.py                          # 6 layers, 32 episodes x 2048 tokens
    python bench/eval_memory.py --layers 30 --episodes 48 --episode-tokens 4096

Run each configuration in a fresh process (the peak is the process's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.eval.evaluate import EnvTarget, EvalSettings, evaluate
from gymwire.trainers.models.hf_policy import TransformersPolicy
from gymwire.trainers.models.tiny import build_tokenizer
from gymwire.trainers.policy import Sampling

HEADS, KV_HEADS, HIDDEN, INTERMEDIATE = 9, 3, 576, 1536  # SmolLM2-135M's layers


def rambling_model(layers: int, folder: Path, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    corpus = [GuessEnv.instructions, "I am thinking of a whole number from 1 to 1000. Guess it.", "500 is wrong. Go higher. Go lower."]
    tokenizer = build_tokenizer(corpus, numbers=1001)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=layers,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=8192, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    stops = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<eot>")}
    with torch.no_grad():
        for token in stops:  # logit 0 for the stop tokens: some other token always scores higher
            model.lm_head.weight[token] = 0
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--turn-tokens", type=int, default=128)
    parser.add_argument("--episode-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = rambling_model(args.layers, Path(tmp), args.seed)
        model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        before = peak_rss_mb()
        policy = TransformersPolicy(model, pad_id=tokenizer.pad_token_id, max_batch=args.concurrency)
        settings = EvalSettings(
            model="rambler", output=Path(tmp) / "eval", tasks=args.episodes, concurrency=args.concurrency,
            sampling=Sampling(temperature=0.0), turn_tokens=args.turn_tokens, episode_tokens=args.episode_tokens,
            progress=False, seed=args.seed,
        )
        max_turns = args.episode_tokens // args.turn_tokens + 2  # the token budget ends every episode first
        started = time.perf_counter()
        with GymServer([GuessEnv], port=0).run_in_thread() as url:
            target = EnvTarget("guess", url, options={"low": 1, "high": 1000}, max_turns=max_turns)
            results = asyncio.run(evaluate(policy, [target], settings, tokenizer))
        seconds = time.perf_counter() - started
        lines = (Path(tmp) / "eval" / "episodes" / "guess.jsonl").read_text().splitlines()
        lengths = [len(json.loads(line)["tokens"]) for line in lines]
    # Keys and values of one token: 2 x layers x kv heads x head dim x 4 bytes.
    per_token = 2 * args.layers * KV_HEADS * (HIDDEN // HEADS) * 4
    live_mb = args.concurrency * args.episode_tokens * per_token / 2**20
    print(json.dumps({
        "layers": args.layers, "episodes": len(lines), "concurrency": args.concurrency,
        "turn_tokens": args.turn_tokens, "episode_tokens": args.episode_tokens,
        "mean_episode_tokens": round(sum(lengths) / len(lengths)), "finish": results["envs"]["guess"]["finish"],
        "model_mb": round(model_mb), "live_kv_cache_mb": round(live_mb),
        "rss_before_eval_mb": round(before), "peak_rss_mb": round(peak_rss_mb()), "seconds": round(seconds, 1),
        "python": sys.version.split()[0], "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
