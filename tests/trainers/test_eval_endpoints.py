"""`gymwire eval` against bad OpenAI-compatible endpoints, each a small real HTTP server on
loopback: every failure is retried or recorded as that episode's error with its kind, the run
never hangs, finished episodes are never lost, and a re-run resumes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from gymwire.sdk.client import GymClient
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.play import PromptConfig
from gymwire.trainers.eval.evaluate import EnvTarget, EvalSettings, evaluate, load_results, mean_interval, results_table, wilson_interval
from gymwire.trainers.models.openai_policy import OpenAIPolicy
from gymwire.trainers.policy import Sampling
from gymwire.trainers.episode import read_jsonl


def completion(text: str) -> tuple[int, dict[str, str], bytes]:
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def error(status: int, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps({"error": {"message": f"status {status}"}}).encode()


HANG = "hang"


class Endpoint:
    """An HTTP server on 127.0.0.1 whose n-th request gets `answer(n)`: (status, headers, body),
    or HANG (never answers until the server stops)."""

    def __init__(self, answer: Callable[[int], object]):
        self.answer = answer
        self.requests: list[dict] = []
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                reply = endpoint.answer(len(endpoint.requests) - 1)
                if reply == HANG:
                    endpoint.release.wait(30)
                    return
                status, headers, payload = reply
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "Endpoint":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gym_url():
    with GymServer([GuessEnv], port=0).run_in_thread() as url:
        yield url


async def run_eval(gym_url, url, tmp_path, tasks=3, concurrency=3, timeout=5.0, retries=2, max_turns=1, env="guess", step_timeout=60.0):
    policy = OpenAIPolicy(url, "m", timeout=timeout, max_retries=retries, concurrency=concurrency)
    settings = EvalSettings(
        model="m", output=tmp_path, tasks=tasks, concurrency=concurrency, sampling=Sampling(0.0), progress=False,
        step_timeout=step_timeout, run_info={"backend": "openai"},
    )
    try:
        results = await evaluate(policy, [EnvTarget(env, gym_url, max_turns=max_turns)], settings)
    finally:
        await policy.close()
    return results["envs"][env], read_jsonl(tmp_path / "episodes" / f"{env}.jsonl")


class SlowGuessEnv(GuessEnv):
    """Guess whose steps take 2 s: past the eval's step timeout below."""

    name = "slow-guess"

    async def step(self, action):
        await asyncio.sleep(2.0)
        return super().step(action)


async def test_a_slow_environment_step_ends_the_episode_as_a_timeout(tmp_path):
    with GymServer([SlowGuessEnv], port=0).run_in_thread() as slow_url, Endpoint(lambda n: completion("Action: 50")) as endpoint:
        stats, episodes = await run_eval(slow_url, endpoint.url, tmp_path, tasks=2, env="slow-guess", step_timeout=0.3)
    assert stats["error_kinds"] == {"env.timeout": 2}
    assert all(e.finish == "error" for e in episodes)


async def test_good_endpoint_records_messages_usage_and_key(gym_url, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sekrit")
    with Endpoint(lambda n: completion("Thought: middle. Action: 50")) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path, max_turns=2)
    assert stats["episodes"] == 3 and stats["errors"]["mean"] == 0
    assert all(r["authorization"] == "Bearer sekrit" for r in endpoint.requests)
    for episode in episodes:
        assert episode.finish in ("truncated", "terminated") and episode.error is None
        assert episode.turns[0].action == "Thought: middle. Action: 50" and episode.turns[0].start is None
        assert episode.messages[0]["role"] == "user" and episode.messages[0]["content"].startswith(GuessEnv.instructions)
        assert episode.messages[1] == {"role": "assistant", "content": "Thought: middle. Action: 50"}
        assert episode.usage == {"prompt_tokens": 11 * len(episode.turns), "completion_tokens": 3 * len(episode.turns), "requests": len(episode.turns)}
    # The request carried the conversation and the budget.
    assert endpoint.requests[0]["body"]["max_tokens"] == 128 and endpoint.requests[0]["body"]["temperature"] == 0.0


async def test_connection_refused_is_recorded(gym_url, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    stats, episodes = await run_eval(gym_url, f"http://127.0.0.1:{port}/v1", tmp_path, retries=1)
    assert stats["error_kinds"] == {"policy.connection": 3}
    assert all(e.finish == "error" and "cannot reach" in e.error for e in episodes)


async def test_401_is_not_retried(gym_url, tmp_path):
    with Endpoint(lambda n: error(401)) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path)
    assert stats["error_kinds"] == {"policy.unauthorized": 3}
    assert len(endpoint.requests) == 3  # one per episode, no retries
    assert "401" in episodes[0].error


async def test_429_with_retry_after_is_retried(gym_url, tmp_path):
    # Every first attempt is refused with Retry-After; the retry gets an answer.
    with Endpoint(lambda n: error(429, {"Retry-After": "1"}) if n % 2 == 0 else completion("Action: 50")) as endpoint:
        stats, _ = await run_eval(gym_url, endpoint.url, tmp_path, concurrency=1)
    assert stats["errors"]["mean"] == 0 and stats["episodes"] == 3
    assert len(endpoint.requests) == 6


async def test_500_is_retried_then_recorded(gym_url, tmp_path):
    with Endpoint(lambda n: error(500)) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path, tasks=2, retries=2)
    assert stats["error_kinds"] == {"policy.http_500": 2}
    assert len(endpoint.requests) == 2 * 3  # each episode: the request and two retries


async def test_hung_server_times_out(gym_url, tmp_path):
    with Endpoint(lambda n: HANG) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path, tasks=2, timeout=1.0, retries=1)
    assert stats["error_kinds"] == {"policy.timeout": 2}
    # At most the request and one retry per episode (on a busy machine the client may give up on
    # an attempt before the server's handler has even read it).
    assert 2 <= len(endpoint.requests) <= 4


async def test_malformed_json_is_recorded(gym_url, tmp_path):
    with Endpoint(lambda n: (200, {"Content-Type": "application/json"}, b'{"choices": [ not json')) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path, tasks=2)
    assert stats["error_kinds"] == {"policy.malformed_response": 2}


async def test_empty_completion_is_recorded(gym_url, tmp_path):
    with Endpoint(lambda n: completion("")) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path, tasks=2)
    assert stats["error_kinds"] == {"policy.empty_completion": 2}
    assert episodes[0].messages[-1]["role"] == "user"  # the prompt that got nothing back is kept


async def test_finished_episodes_survive_failures_and_rerun_resumes(gym_url, tmp_path):
    # Two answers, then the server breaks: two finished episodes and two errors are all recorded.
    with Endpoint(lambda n: completion("Action: 50") if n < 2 else error(400)) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path, tasks=4, concurrency=1)
    assert stats["episodes"] == 4 and stats["finish"].get("error") == 2
    assert stats["error_kinds"] == {"policy.http_400": 2}
    finished = {e.task.index for e in episodes if e.finish != "error"}
    # A re-run plays only the two failed tasks again.
    with Endpoint(lambda n: completion("Action: 50")) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path, tasks=4, concurrency=1)
    assert len(endpoint.requests) == 2
    assert stats["episodes"] == 4 and stats["errors"]["mean"] == 0
    assert finished <= {e.task.index for e in episodes}
    assert len(episodes) == 6  # appended, never rewritten: the last line per task counts
    table = results_table([load_results(tmp_path)], paper=True)
    assert table.splitlines()[0] == "| model | guess |" and table.splitlines()[2].startswith("| m | ")
    assert "(paper)" not in table  # the paper has no guess column


async def test_a_task_range_plays_exactly_those_indices(gym_url, tmp_path):
    """`--tasks A-B` picks indices (TextCraft's depth-1 test goals are 0-31), not a sample; a range
    past the split is refused before anything is played."""
    with Endpoint(lambda n: completion("Action: 50")) as endpoint:
        stats, episodes = await run_eval(gym_url, endpoint.url, tmp_path, tasks=range(5, 8))
        assert sorted(e.task.index for e in episodes) == [5, 6, 7] and stats["episodes"] == 3
        assert json.loads((tmp_path / "run.json").read_text())["tasks"] == "5-7"
        size = (await describe_guess(gym_url)).splits["test"]
        with pytest.raises(ValueError, match=f"go past the split, which has {size}"):
            await run_eval(gym_url, endpoint.url, tmp_path / "past", tasks=range(size - 1, size + 1))
    assert not (tmp_path / "past" / "episodes" / "guess.jsonl").exists()


async def describe_guess(gym_url):
    async with GymClient(gym_url) as client:
        return await client.describe("guess")


async def test_prompt_config_system_examples_and_action_pattern(gym_url, tmp_path):
    prompt = PromptConfig(
        system="You play guessing games.",
        examples=({"role": "user", "content": "Guess 1..3"}, {"role": "assistant", "content": "Thought: middle. Action: 2"}),
        action_pattern=r"Action:\s*(\d+)",
    )
    with Endpoint(lambda n: completion("Thought: halve it. Action: 50 then maybe 25")) as endpoint:
        policy = OpenAIPolicy(endpoint.url, "m", timeout=5, max_retries=0)
        settings = EvalSettings(model="m", output=tmp_path, tasks=1, progress=False)
        try:
            await evaluate(policy, [EnvTarget("guess", gym_url, max_turns=1, prompt=prompt)], settings)
        finally:
            await policy.close()
    sent = endpoint.requests[0]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "You play guessing games." and sent[2]["content"] == "Thought: middle. Action: 2"
    (episode,) = read_jsonl(tmp_path / "episodes" / "guess.jsonl")
    assert episode.turns[0].action == "50"  # the pattern's group, not the whole reply


def test_intervals():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert mean_interval([1.0] * 5) == (1.0, 1.0)
    low, high = mean_interval([0.0, 1.0] * 20)
    assert low < 0.5 < high and 0.3 < low and high < 0.7


def test_cli_errors_are_one_line(capsys):
    from gymwire.sdk.cli import main

    assert main(["eval", "smollm2", "guess", "--backend", "openai"]) == 2
    assert main(["eval", "smollm2", "guess", "--tasks", "some"]) == 2
    assert main(["eval", "smollm2", "nosuchenv"]) == 2
    assert main(["eval", "--compare", "/nonexistent"]) == 2
    assert main(["eval", "smollm2", "guess", "--tasks", "9-3"]) == 2
    assert main(["eval", "smollm2", "guess", "--tasks", "guess=1-x"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 6 and all(line.startswith("gymwire eval: ") for line in errors)
    assert "--base-url" in errors[0] and "--tasks" in errors[1] and "built-in ones" in errors[2] and "results.json" in errors[3]
    assert "0 <= A <= B" in errors[4] and "A-B" in errors[5]


def test_a_run_whose_every_episode_failed_exits_non_zero(tmp_path, capsys):
    """The endpoint lists its models (so the start-up check passes) but refuses every completion:
    no result, so the exit status says so in one line, naming the first error."""
    from gymwire.sdk.cli import main

    class ListingEndpoint(Endpoint):
        def __init__(self) -> None:
            super().__init__(lambda n: error(401))
            handler = self.server.RequestHandlerClass

            def do_GET(request: BaseHTTPRequestHandler) -> None:
                payload = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
                request.send_response(200)
                request.send_header("Content-Type", "application/json")
                request.send_header("Content-Length", str(len(payload)))
                request.end_headers()
                request.wfile.write(payload)

            handler.do_GET = do_GET

    with ListingEndpoint() as endpoint:
        code = main(["eval", "m", "guess", "--base-url", endpoint.url, "--tasks", "2", "--retries", "0",
                     "--output", str(tmp_path / "run"), "--no-progress"])
    assert code != 0
    # stderr: the per-environment progress line (--no-progress), then the one error line.
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gymwire")]
    assert len(errors) == 1 and "every episode of guess failed (2 of 2" in errors[0], errors
    assert "HTTP 401" in errors[0] and "Traceback" not in errors[0]
    assert endpoint.requests, "the endpoint was asked"
