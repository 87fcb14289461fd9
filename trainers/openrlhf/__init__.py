"""The OpenRLHF adapter (extra `gymwire[openrlhf]`, tested with openrlhf 0.11.2).

- agent_func.py: the file for `--train.agent_func_path` (agent.py does the work).
- steps.py, publishing.py, train.py: the training step reaches the agents exactly (horizon schedules).
- dataset.py, launch.py, cli.py: `gymwire openrlhf prepare` and `gymwire openrlhf launch`.

Nothing here imports openrlhf, torch or ray at package import time.
"""
