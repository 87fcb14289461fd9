"""llama.cpp's server (SmolLM2-135M-Instruct) with different thread settings: seconds for the same
chat requests, to choose `gymwire model serve`'s default --threads.

Each setting serves the model afresh and answers REQUESTS chat requests (a guess-sized prompt of
~150 tokens, 32 new tokens, greedy), CONCURRENT at a time.

    python bench/llama_threads.py [--settings 1/1 default 2/2] [--requests 16] [--concurrent 4] [--ubatch 1]

A setting is GENERATION/BATCH threads; `default` is llama-cpp-python's own (half the cores for
generation, all of them for prompt batches).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.request

from gymwire.trainers.models.local import _free_port, model_file

PROMPT = (
    "I am thinking of a whole number from 1 to 100. Guess it. Answer with one whole number, e.g. `Action: 42`. "
    "Only the last number you write counts. Think first: which guess halves the numbers still possible? "
) * 2


def ask(base_url: str, index: int) -> float:
    body = json.dumps({
        "model": "m", "messages": [{"role": "user", "content": f"{PROMPT} (game {index})"}], "max_tokens": 32,
        "temperature": 0.0, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0,
    }).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as answer:
        answer.read()
    return time.perf_counter() - started


def measure(setting: str, requests: int, at_once: int, ubatch: int | None) -> float:
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_file("smollm2")), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048"] + (["--n_ubatch", str(ubatch)] if ubatch else [])
    if setting != "default":
        generation, batch = setting.split("/")
        command += ["--n_threads", generation, "--n_threads_batch", batch]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base_url}/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        ask(base_url, -1)  # warm-up
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
            list(pool.map(lambda i: ask(base_url, i), range(requests)))
        return time.perf_counter() - started
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["1/1", "default", "2/2"])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--ubatch", type=int, help="llama.cpp's physical batch (1 where its batched kernels crash)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.requests} requests, {args.concurrent} at a time")
    for setting in args.settings:
        seconds = measure(setting, args.requests, args.concurrent, args.ubatch)
        print(f"threads {setting:>8}: {seconds:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
