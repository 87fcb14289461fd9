"""Deep Search benchmark: index build, search latency through the server, server memory, sandbox cost.

    python bench/env_deepsearch.py [--seconds 8] [--out bench/results/env_deepsearch.json]

1. Index: the built-in corpus (34,258 passages) indexed from scratch into a temporary cache, by
   tantivy (what the server uses) and, side by side, by bm25s (the alternative considered; skipped
   when bm25s is not installed): build time, size on disk, and in-process query latency p50/p99
   over the test questions and the titles of their evidence.
2. Search latency through the server (child process, one msgpack connection): 1 and then 64
   sessions, each sending `<search>` steps back to back for `--seconds`; step latency p50/p99,
   searches/s, and CPU time per search step in the server and the client (which, unlike the
   latencies, does not depend on what else the machine runs).
3. Server memory: resident set after loading the data, and its growth per open session (64).
4. The Python tool: wall time of `print(1)` in the sandbox (p50 of 20 runs).

Client and server share this machine's cores; the load average at the start is recorded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import env_bench
from gymwire.servers.deepsearch import DeepSearchEnv
from gymwire.servers.deepsearch.env import load_data

ENV = "deepsearch"
MAX_TURNS = 1_000_000


def queries() -> list[str]:
    test = load_data(None, None, None).splits["test"]
    return [q.question for q in test] + [e["title"] for q in test for e in q.metadata["evidence"]]


def percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    pick = lambda p: round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e3, 3)  # noqa: E731
    return {"count": len(ordered), "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def bench_tantivy(cache: Path, texts: list[str]) -> dict:
    from gymwire.servers.deepsearch.corpus import Corpus
    from gymwire.servers.deepsearch.retrieval import BM25Index

    corpus = Corpus()
    corpus.digest  # generating the built-in corpus is not part of the build
    started = time.perf_counter()
    index = BM25Index(corpus, cache_dir=cache)
    build = time.perf_counter() - started
    latencies = []
    for text in texts:
        started = time.perf_counter()
        index.search(text, 3)
        latencies.append(time.perf_counter() - started)
    return {"build_s": round(build, 2), "index_bytes": folder_bytes(index.path), "stores_passages": True, "query": percentiles(latencies)}


def bench_bm25s(cache: Path, texts: list[str]) -> dict | None:
    try:
        import bm25s
        import Stemmer
    except ImportError:
        return None
    from gymwire.servers.deepsearch.corpus import Corpus

    passages = [f"{p.title}\n{p.text}" for p in Corpus().passages()]
    stemmer = Stemmer.Stemmer("english")
    started = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passages, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    retriever.save(cache / "bm25s")
    build = time.perf_counter() - started
    latencies = []
    for text in texts:
        started = time.perf_counter()
        retriever.retrieve(bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False), k=3, show_progress=False, n_threads=1)
        latencies.append(time.perf_counter() - started)
    return {"build_s": round(build, 2), "index_bytes": folder_bytes(cache / "bm25s"), "stores_passages": False, "query": percentiles(latencies)}


async def search_latency(url: str, pid: int, texts: list[str], sessions: int, seconds: float) -> dict:
    from gymwire.sdk.client import GymClient

    latencies: list[float] = []
    async with GymClient(url) as client:
        opened = [await client.open(ENV, split="test", index=i % 200, max_turns=MAX_TURNS) for i in range(sessions)]
        deadline = time.perf_counter() + seconds

        async def worker(offset: int, session) -> None:
            n = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await session.step(f"<search>{texts[n % len(texts)]}</search>")
                latencies.append(time.perf_counter() - started)
                n += sessions

        started = time.perf_counter()
        server_cpu, client_cpu = env_bench.cpu_seconds(pid), time.process_time()
        await asyncio.gather(*(worker(i, s) for i, s in enumerate(opened)))
        elapsed = time.perf_counter() - started
        result = {"sessions": sessions, **percentiles(latencies), "steps": len(latencies), "searches_per_s": round(len(latencies) / elapsed)}
        result = env_bench.with_cpu_cost(result, pid, server_cpu, client_cpu)
        for session in opened:
            await session.close()
    return result


async def memory(url: str, pid: int, sessions: int) -> dict:
    from gymwire.sdk.client import GymClient

    async with GymClient(url) as client:
        loaded = env_bench.rss_bytes(pid)
        opened = [await client.open(ENV, split="test", index=i % 200) for i in range(sessions)]
        for session in opened:
            await session.step("<search>Paris</search>")
        grown = env_bench.rss_bytes(pid)
        for session in opened:
            await session.close()
    return {"rss_bytes_loaded": loaded, "rss_bytes_per_session": (grown - loaded) // sessions, "sessions": sessions}


async def sandbox_latency(runs: int = 20) -> dict:
    from gymwire.servers.deepsearch.sandbox import run_python

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await run_python("print(1)")
        times.append(time.perf_counter() - started)
        assert result.output == "1\n", result
    return {"runs": runs, "p50_ms": round(statistics.median(times) * 1e3, 1)}


def main() -> int:
    parser = env_bench.make_parser(__doc__, memory_sessions=64, out="bench/results/env_deepsearch.json")
    args = parser.parse_args()
    if args.serve:
        load_data(None, None, None)  # load the data and open the index before the first session
        env_bench.serve({ENV: DeepSearchEnv}, args.serve)
        return 0
    texts = queries()
    results: dict = {"machine": env_bench.machine(load_average=True), "queries": len(texts)}
    scratch = Path(tempfile.mkdtemp(prefix="deepsearch-bench-"))
    try:
        results["index"] = {"tantivy": bench_tantivy(scratch / "tantivy", texts), "bm25s": bench_bm25s(scratch, texts)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for engine, figures in results["index"].items():
        if figures:
            print(f"{engine}: build {figures['build_s']} s, {figures['index_bytes'] / 1e6:.1f} MB, "
                  f"query p50 {figures['query']['p50_ms']} ms p99 {figures['query']['p99_ms']} ms (in-process)")
    proc, url = env_bench.start_server(__file__)
    try:
        results["memory"] = asyncio.run(memory(url, proc.pid, args.memory_sessions))
        print(f"server RSS with data loaded: {results['memory']['rss_bytes_loaded'] / 2**20:.0f} MiB, "
              f"{results['memory']['rss_bytes_per_session']:,} B per open session")
        results["search"] = []
        for sessions in (1, args.sessions):
            row = asyncio.run(search_latency(url, proc.pid, texts, sessions, args.seconds))
            results["search"].append(row)
            print(f"{sessions} sessions: search step p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, {row['searches_per_s']:,} searches/s; "
                  f"CPU per search step: server {row['server_cpu_us_per_step']} us, client {row['client_cpu_us_per_step']} us")
    finally:
        proc.terminate()
        proc.wait()
    results["sandbox"] = asyncio.run(sandbox_latency())
    print(f"python sandbox: print(1) p50 {results['sandbox']['p50_ms']} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
