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

# 2. Clone: a seeded 445 of its episodes of at most 6 turns (439 successful: the rows), the whole
#    model, lr 1e-4; stopped and saved after 45 minutes of training (160 rows on this shared CPU).
[ -f "$RUN/model/config.json" ] || gymwire learn sft "$DATA" --output "$RUN" --episodes 445 --max-episode-turns 6 \
    --epochs 1 --lr 1e-4 --batch-rows 8 --threads 1 --time-limit 2700

# 3. The figure of record: greedy, the environment's 20 turns, at most 2,048 tokens an episode (~10
#    BabyAI turns: what this CPU affords), all 90 test tasks.
gymwire eval "$RUN/model" babyai --turn-tokens 24 --episode-tokens 2048 --concurrency 45 --tasks 90 \
    --name smollm2-babyai-bc --output runs/eval/babyai-bc --no-progress
