#!/usr/bin/env bash
# Behaviour cloning of SmolLM2-135M-Instruct on BabyAI, the recipe of docs/learning.md, on a CPU.
#   bash examples/learn-babyai.sh            # collect, clone, evaluate (figures in docs/learning.md)
# Every step resumes or skips what is done: rerun it after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread: on a shared 2-core machine a second one mostly waits
DATA=runs/data/babyai-expert-all.jsonl
RUN=${RUN:-runs/babyai-bc}

# 1. The expert on 3,000 train tasks (deterministic: the same file every time; ~4 min).
gymwire collect babyai --tasks 0-2999 --output "$DATA" --no-progress

# 2. Clone: 150 of its successful episodes of at most 3 turns, one epoch, the top 8 of 30 layers.
[ -f "$RUN/model/config.json" ] || gymwire learn sft "$DATA" --output "$RUN" --episodes 150 --max-episode-turns 3 \
    --train-layers 8 --epochs 1 --lr 2e-4 --batch-rows 8 --threads 1

# 3. The figure of record: greedy, the environment's 20 turns, at most 2,048 tokens an episode (~10
#    BabyAI turns: what this CPU affords); a seeded 45 of the 90 test tasks, then TASKS=all plays the
#    other 45 into the same --output (eval resumes).
gymwire eval "$RUN/model" babyai --turn-tokens 24 --episode-tokens 2048 --concurrency 30 --tasks "${TASKS:-45}" \
    --name smollm2-babyai-bc --output runs/eval/babyai-bc --no-progress
