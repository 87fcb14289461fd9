#!/usr/bin/env bash
# Behaviour cloning of SmolLM2-135M-Instruct on TextCraft, the recipe of docs/learning.md, on a CPU.
#   bash examples/learn-textcraft.sh        # collect, clone, evaluate (figures in docs/learning.md)
# Every step resumes or skips what is done: rerun it after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=${RUN:-runs/textcraft-bc}

# 1. The expert on every depth-1 train goal and on train goals 114-299 (depth 2); seconds.
gymwire collect textcraft --tasks 0-113 --options '{depth: 1}' --output runs/data/textcraft-d1-expert.jsonl --no-progress
gymwire collect textcraft --tasks 114-299 --output runs/data/textcraft-d2-expert.jsonl --no-progress

# 2. Clone: all 114 depth-1 episodes and a seeded 100 depth-2 ones, the whole model, two epochs (25 minutes).
[ -f "$RUN/model/config.json" ] || gymwire learn sft runs/data/textcraft-d1-expert.jsonl runs/data/textcraft-d2-expert.jsonl \
    --output "$RUN" --episodes 114,100 --epochs 2 --lr 1e-4 --batch-rows 8 --threads 1

# 3. Greedy, 10 turns (the environment's 30 make failing episodes long on this CPU): the 32 depth-1 test
#    goals (the test split is ordered by depth: 0-31), then a seeded 40 of all 100 (all depths).
gymwire eval "$RUN/model" textcraft --turn-tokens 48 --max-turns 10 --concurrency 32 --tasks 0-31 \
    --name smollm2-textcraft-bc-d1 --output runs/eval/textcraft-bc-d1 --no-progress
gymwire eval "$RUN/model" textcraft --turn-tokens 48 --max-turns 10 --concurrency 40 --tasks 40 \
    --name smollm2-textcraft-bc --output runs/eval/textcraft-bc --no-progress

# 4. A further round: GRPO from the clone on depth-1 train goals, ScalingInter-RL's horizon 4 then 8 turns,
#    8 steps (15 minutes); then the same depth-1 evaluation of its last checkpoint.
[ -f runs/textcraft-rl/learn.json ] || python bench/learn.py examples/smollm2-textcraft.yaml --set model.path="$RUN/model" \
    --set model.threads=2 --set horizon=staged:4,8@3 --set rollout.tasks_per_step=6 --set rollout.group_size=4 \
    --set rollout.temperature=0.8 --set train.eval_every=0 --set train.rollouts_every=1 \
    --set algorithm.micro_batch_tokens=2048 --steps 8 --output-dir runs/textcraft-rl --time-limit 1440
gymwire eval runs/textcraft-rl/checkpoints/step-000008 textcraft --turn-tokens 48 --max-turns 10 --concurrency 32 \
    --tasks 0-31 --name smollm2-textcraft-rl-d1 --output runs/eval/textcraft-rl-d1 --no-progress
