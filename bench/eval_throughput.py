"""`gymwire eval` throughput: episodes/s at concurrency 1, 16 and 64, one environment (guess) and
one backend (openai), measured side by side in one run against two endpoints on loopback:

- `llama`: llama.cpp's OpenAI-compatible server serving SmolLM2-135M-Instruct (the real model;
  llama-cpp-python's server answers one request at a time, so concurrency overlaps only the
  environment's and the client's time with generation);
- `instant`: an endpoint that answers every request at once with a fixed reply, so the figures are
  eval's own cost (HTTP client, gym server round trips, JSONL writes).

    python bench/eval_throughput.py [--endpoints llama instant] [--tasks 64] [--turns 2] [--concurrency 1 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.eval.evaluate import EnvTarget, EvalSettings, evaluate
from gymwire.trainers.models.local import llama_server, model_file
from gymwire.trainers.models.openai_policy import OpenAIPolicy
from gymwire.trainers.policy import Sampling

REPLY = json.dumps({
    "id": "x", "object": "chat.completion", "created": 0, "model": "instant",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Thought: halve it. Action: 50"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
}).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 refuses connections when 64 episodes start at once


class _Instant(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)

    def log_message(self, *args: object) -> None:
        pass


async def measure(base_url: str, gym_url: str, tasks: int, turns: int, concurrency: int, turn_tokens: int) -> tuple[float, int]:
    policy = OpenAIPolicy(base_url, "smollm2", timeout=600, max_retries=0, concurrency=concurrency)
    with tempfile.TemporaryDirectory() as folder:
        settings = EvalSettings(
            model="bench", output=Path(folder), tasks=tasks, concurrency=concurrency, sampling=Sampling(0.0),
            turn_tokens=turn_tokens, progress=False,
        )
        started = time.perf_counter()
        results = await evaluate(policy, [EnvTarget("guess", gym_url, max_turns=turns)], settings)
        seconds = time.perf_counter() - started
    await policy.close()
    stats = results["envs"]["guess"]
    if stats["error_kinds"]:
        print(f"  errors: {stats['error_kinds']}")
    return stats["episodes"] / seconds, stats["episodes"] - round(stats["errors"]["mean"] * stats["episodes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", nargs="+", default=["llama", "instant"], choices=["llama", "instant"])
    parser.add_argument("--tasks", type=int, default=64, help="episodes per measurement (guess test tasks)")
    parser.add_argument("--turns", type=int, default=2, help="turn limit per episode")
    parser.add_argument("--turn-tokens", type=int, default=16, help="reply budget (llama)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    print(f"guess, {args.tasks} episodes x {args.turns} turns, replies <= {args.turn_tokens} tokens, backend openai")
    with GymServer([GuessEnv], port=0).run_in_thread() as gym_url:
        for endpoint in args.endpoints:
            if endpoint == "llama":
                server = llama_server(model_file("smollm2"), n_ctx=2048)
            else:
                http = _Server(("127.0.0.1", 0), _Instant)
                threading.Thread(target=http.serve_forever, daemon=True).start()
                server = _Stopping(http)
            with server as base_url:
                rates = {}
                for concurrency in args.concurrency:
                    rate, ok = asyncio.run(measure(base_url, gym_url, args.tasks, args.turns, concurrency, args.turn_tokens))
                    rates[concurrency] = rate
                    print(f"{endpoint:8s} concurrency {concurrency:3d}: {rate:8.2f} episodes/s ({ok}/{args.tasks} without error)", flush=True)
                base = rates[args.concurrency[0]]
                print(f"{endpoint:8s} ratios to concurrency {args.concurrency[0]}: " + ", ".join(f"{c}: {r / base:.2f}x" for c, r in rates.items()))


class _Stopping:
    def __init__(self, http: ThreadingHTTPServer):
        self.http = http

    def __enter__(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


if __name__ == "__main__":
    main()
