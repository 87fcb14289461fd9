"""Supervised training throughput (trained tokens/s) of `gymwire learn sft`'s loop on this machine.

Trains the real model (SmolLM2-135M-Instruct by default) for a few optimizer steps on synthetic rows
of the recipes' shape (ROW_TOKENS tokens, the last AGENT_TOKENS of each learned) in each mode and
prints tokens/s (every token of a row counts: it is all forwarded) and seconds per optimizer step:

    python bench/sft_throughput.py                         # full, top-8 layers, LoRA r=16; 512-token rows
    python bench/sft_throughput.py --modes top8 --threads 1 --rows 8 --row-tokens 1024

Modes: full (every weight), topN (only the top N decoder layers: no backward below them),
loraN (PEFT LoRA of rank N on every linear layer). One row per micro-batch, as the recipes run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--modes", default="full,top8,lora16")
    parser.add_argument("--rows", type=int, default=8, help="rows per mode (one optimizer step per --batch-rows)")
    parser.add_argument("--batch-rows", type=int, default=4)
    parser.add_argument("--row-tokens", type=int, default=512)
    parser.add_argument("--agent-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import torch

    from gymwire.trainers.learn.sft import SFTSettings, train_sft
    from gymwire.trainers.learn.tokens import TokenRow

    generator = torch.Generator().manual_seed(0)
    rows = [
        TokenRow(torch.randint(100, 40000, (args.row_tokens,), generator=generator).tolist(),
                 [0] * (args.row_tokens - args.agent_tokens) + [1] * args.agent_tokens, f"row_{i}")
        for i in range(args.rows)
    ]
    results = []
    for mode in args.modes.split(","):
        settings = SFTSettings(epochs=1, lr=1e-5, batch_rows=args.batch_rows, threads=args.threads, warmup_ratio=0.0)
        if mode.startswith("top"):
            settings.train_layers = int(mode[3:])
        elif mode.startswith("lora"):
            settings.lora_rank = int(mode[4:])
        elif mode != "full":
            parser.error(f"unknown mode {mode!r}: full, topN or loraN")
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            train_sft(args.model, rows, folder, settings)
            records = [json.loads(line) for line in open(f"{folder}/metrics.jsonl")]
        train_seconds = records[-1]["seconds"]
        steps = records[-1]["step"]
        result = {"mode": mode, "rows": args.rows, "row_tokens": args.row_tokens, "seconds": round(train_seconds, 1),
                  "tokens_per_s": round(args.rows * args.row_tokens / train_seconds, 1),
                  "seconds_per_step": round(train_seconds / steps, 1), "wall_with_loading": round(time.perf_counter() - started, 1)}
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"threads": args.threads or torch.get_num_threads(), "results": results}, out, indent=1)


if __name__ == "__main__":
    main()
