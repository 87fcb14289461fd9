"""`gymwire bench` (installed as gymwire.bench from bench/suite/): protocol overhead, concurrency,
memory and latency figures, measured in one run.

Every figure is measured on the machine that runs the command, against baselines measured in the
same run: a raw TCP ping-pong between two processes (the floor) and an AgentGym-style HTTP/JSON
server (FastAPI + uvicorn, one POST per step). Needs the `bench` extra (fastapi, uvicorn, aiohttp,
matplotlib): `pip install 'gymwire[bench]'`. The command registers through the `gymwire.commands`
entry point, so the SDK never imports this package.
"""
