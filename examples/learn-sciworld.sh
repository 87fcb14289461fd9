#!/usr/bin/env bash
# Behaviour cloning of SmolLM2-135M-Instruct on SciWorld, the recipe of docs/learning.md, on a CPU.
#   bash examples/learn-sciworld.sh        # collect, clone, evaluate (figures in docs/learning.md)
# Every step resumes or skips what is done: rerun it after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=${RUN:-runs/sciworld-bc}
DATA=runs/data/sciworld-expert-spread.jsonl

# 1. The expert (ScienceWorld's gold path) on the first 6 train tasks of each of the 23 task types
#    (the train split is ordered by type), up to 80 turns: a few minutes.
TASKS=$(python -c "
from gymwire.servers.sciworld import tasks
first = {}
for index in range(tasks.split_sizes()['train']):
    first.setdefault(tasks.task_at('train', index).name, []).append(index)
print(','.join(str(i) for indices in first.values() for i in indices[:6]))")
gymwire collect sciworld --tasks "$TASKS" --max-turns 80 --concurrency 2 --output "$DATA" --no-progress

# 2. Clone: the whole model, one epoch over the successful episodes (rows of at most 1,024 tokens),
#    stopped and saved after 25 minutes.
[ -f "$RUN/model/config.json" ] || gymwire learn sft "$DATA" --output "$RUN" --epochs 1 --lr 1e-4 \
    --batch-rows 8 --threads 1 --time-limit 1500

# 3. Greedy, a seeded 20 of the 200 test tasks, the environment's 20 turns, 2,048 tokens an episode.
gymwire eval "$RUN/model" sciworld --turn-tokens 32 --episode-tokens 2048 --concurrency 20 --tasks 20 \
    --name smollm2-sciworld-bc --output runs/eval/sciworld-bc --no-progress
