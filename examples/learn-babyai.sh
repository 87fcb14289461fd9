#!/usr/bin/env bash
# Behaviour cloning of SmolLM2-135M-Instruct on BabyAI: the recipe of docs/learning.md, on a CPU.
#   bash examples/learn-babyai.sh            # collect, clone, evaluate: 51.1% on all 90 test tasks there
#   TRIED=1 bash examples/learn-babyai.sh    # also the earlier clone and the rounds tried on it (hours)
# Every step resumes or skips what is done: rerun it after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=runs/data/babyai-expert-all.jsonl
RUN=${RUN:-runs/babyai-bc}
EVAL=(--turn-tokens 24 --episode-tokens 2048 --concurrency 45 --tasks 90 --no-progress)

# 1. The expert on 3,000 train tasks (deterministic: the same file every time; ~4 min).
gymwire collect babyai --tasks 0-2999 --output "$DATA" --no-progress

# 2. Clone in one run: a seeded 1,200 of its episodes of at most 10 turns, the whole model, lr 1e-4,
#    stopped and saved after 4,000 s of training (83% of the epoch at 184 trained tokens/s there).
[ -f "$RUN-one/model/config.json" ] || gymwire learn sft "$DATA" --output "$RUN-one" --episodes 1200 \
    --max-episode-turns 10 --epochs 1 --lr 1e-4 --batch-rows 8 --threads 2 --time-limit 4000

# 3. The figure of record: greedy, the environment's 20 turns, eval's default budget (4,096 tokens an
#    episode), all 90 test tasks (~30 min).
gymwire eval "$RUN-one/model" babyai --turn-tokens 24 --concurrency 45 --tasks 90 --no-progress \
    --name smollm2-babyai-bc-one --output runs/eval/babyai-bc-one

[ "${TRIED:-0}" = 1 ] || exit 0

# The earlier clone, in two stages (42.2%), and the rounds tried on it, with 2,048 tokens an episode.
# Stage 1: a seeded 445 episodes of at most 6 turns (439 successful: the rows), lr 1e-4, 45 minutes.
[ -f "$RUN/model/config.json" ] || OMP_NUM_THREADS=1 gymwire learn sft "$DATA" --output "$RUN" --episodes 445 \
    --max-episode-turns 6 --epochs 1 --lr 1e-4 --batch-rows 8 --threads 1 --time-limit 2700

# Stage 2: from stage 1, another seeded 445 episodes (seed 1) of at most 10 turns, lr 5e-5, 55 minutes.
[ -f "$RUN-more/model/config.json" ] || gymwire learn sft "$DATA" --model "$RUN/model" --output "$RUN-more" \
    --episodes 445 --max-episode-turns 10 --seed 1 --epochs 1 --lr 5e-5 --batch-rows 8 --threads 2 --time-limit 3300
gymwire eval "$RUN-more/model" babyai "${EVAL[@]}" --name smollm2-babyai-bc --output runs/eval/babyai-bc

# DAgger: the stage-1 clone plays unseen train tasks greedily and the expert labels every state it
#    reaches; from stage 2, learn on those labels with 40 expert episodes replayed (25 minutes).
gymwire collect babyai --policy "$RUN/model" --label expert --tasks 3000-3049 --temperature 0 --turn-tokens 24 \
    --episode-tokens 2048 --concurrency 50 --threads 1 --output runs/data/babyai-dagger.jsonl --no-progress
[ -f "$RUN-dagger/model/config.json" ] || gymwire learn sft runs/data/babyai-dagger.jsonl "$DATA" --episodes 35,40 \
    --max-episode-turns 20 --model "$RUN-more/model" --output "$RUN-dagger" --seed 2 --epochs 1 --lr 5e-5 \
    --batch-rows 8 --threads 2 --time-limit 1500
gymwire eval "$RUN-dagger/model" babyai "${EVAL[@]}" --name smollm2-babyai-dagger --output runs/eval/babyai-dagger

# Stage 3, tried and worse (36.7%): from stage 2, a seeded 445 episodes (seed 2) of at most 20 turns, 50 minutes.
[ -f "$RUN-long/model/config.json" ] || gymwire learn sft "$DATA" --model "$RUN-more/model" --output "$RUN-long" \
    --episodes 445 --max-episode-turns 20 --seed 2 --epochs 1 --lr 5e-5 --batch-rows 8 --threads 1 --time-limit 3000
gymwire eval "$RUN-long/model" babyai "${EVAL[@]}" --name smollm2-babyai-bc-long --output runs/eval/babyai-bc-long

# DAgger again, done as DAgger: stage 2 plays 120 unseen train tasks greedily, the expert labels
#    every state (a state met again with the same two turns of history is learned once per episode);
#    from stage 2, learn on all those labels with a seeded 200 expert episodes of at most 10 turns.
gymwire collect babyai --policy "$RUN-more/model" --label expert --tasks 3200-3319 --temperature 0 --turn-tokens 24 \
    --episode-tokens 1536 --concurrency 60 --threads 2 --output runs/data/babyai-dagger3.jsonl --no-progress
[ -f "$RUN-dagger3/model/config.json" ] || gymwire learn sft runs/data/babyai-dagger3.jsonl "$DATA" --episodes 120,200 \
    --max-episode-turns 40,10 --model "$RUN-more/model" --output "$RUN-dagger3" --seed 3 --epochs 1 --lr 3e-5 \
    --batch-rows 8 --threads 2 --time-limit 2400
gymwire eval "$RUN-dagger3/model" babyai "${EVAL[@]}" --name smollm2-babyai-dagger3 --output runs/eval/babyai-dagger3
