"""The CLI as the README shows it (real processes), the sync facade, the Gymnasium adapter, metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.server import GymServer
from gymwire.sdk.gym_env import GymnasiumEnv
from gymwire.sdk.sync import SyncGymClient
from gymwire.servers.guess import GuessEnv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("server did not start listening")


@pytest.fixture
def served_guess():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gymwire.sdk.cli", "serve", "guess", "--port", str(port), "--metrics-port", str(_free_port())],
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_port(port, proc)
    yield port, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def gymwire(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gymwire.sdk.cli", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_serve_envs_play_and_sigterm_drain(served_guess):
    port, proc = served_guess
    url = f"ws://127.0.0.1:{port}"
    listing = gymwire("envs", url)
    assert listing.returncode == 0 and "guess 1.0.0" in listing.stdout and "test=100" in listing.stdout
    # test/3 hides 15: a person bisecting reaches it on the fifth guess.
    played = gymwire("play", url, "guess", "--split", "test", "--index", "3", stdin="50\n25\n12\nnonsense\n18\n15\n")
    assert played.returncode == 0, played.stderr
    out = played.stdout
    assert "I am thinking of a whole number from 1 to 100" in out
    assert "I did not see a number" in out
    assert "Correct! The number was 15." in out
    assert "Episode terminated: success=True score=1 turns=6" in out
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "draining" in proc.stderr.read()


def test_cli_errors_say_what_to_do():
    unknown = gymwire("serve", "no-such-env")
    assert unknown.returncode == 2 and "built-in ones are" in unknown.stderr and "guess" in unknown.stderr
    unreachable = gymwire("envs", f"ws://127.0.0.1:{_free_port()}")
    assert unreachable.returncode == 1 and "is `gymwire serve` running there?" in unreachable.stderr
    version = gymwire("version")
    assert version.returncode == 0 and "protocol 1.0" in version.stdout


def test_metrics_endpoint(served_guess):
    port, proc = served_guess
    metrics_port = int(proc.args[proc.args.index("--metrics-port") + 1])
    with SyncGymClient(f"ws://127.0.0.1:{port}") as client:
        session = client.open("guess", seed=1)
        session.step("50")
        session.step("oops")
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'gymwire_steps_total{env="guess"} 2.0' in text
    assert 'gymwire_sessions_opened_total{env="guess"} 1.0' in text
    assert "gymwire_step_seconds_bucket" in text
    # A page reached through DNS rebinding names its own host: refused, and no counter leaves.
    rebound = urllib.request.Request(f"http://127.0.0.1:{metrics_port}/metrics", headers={"Host": f"evil.example:{metrics_port}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(rebound, timeout=5)
    assert refused.value.code == 403 and b"gymwire_steps" not in refused.value.read()


def test_sync_facade_and_gymnasium_adapter():
    with GymServer([GuessEnv], port=0).run_in_thread() as url:
        with SyncGymClient(url) as client:
            assert [e.name for e in client.list_envs()] == ["guess"]
            session = client.open("guess", split="test", index=3)
            assert not session.done
            assert session.step("15").terminated
            with pytest.raises(ProtocolError) as info:
                session.step("15")
            assert info.value.code is ErrorCode.EPISODE_FINISHED
        env = GymnasiumEnv(url, "guess", split="test")
        obs, info = env.reset(options={"index": 3})
        assert obs.startswith("I am thinking") and "session" in info
        obs, reward, terminated, truncated, info = env.step("15")
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert info["metrics"]["success"] is True
        obs, info = env.reset(seed=7, options={"low": 1, "high": 4})
        assert "from 1 to 4" in obs
        env.close()


def test_serve_a_user_module_by_import_path(tmp_path):
    module = tmp_path / "echo_env.py"
    module.write_text(
        "from gymwire.sdk import Environment, StepOutcome\n"
        "class Echo(Environment):\n"
        "    name = 'echo'\n"
        "    def reset(self, task):\n"
        "        return 'say something'\n"
        "    def step(self, action):\n"
        "        return StepOutcome(action[::-1], terminated=True, reward=1.0)\n"
    )
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gymwire.sdk.cli", "serve", "echo_env:Echo", "--port", str(port)],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        _wait_for_port(port, proc)
        played = gymwire("play", f"ws://127.0.0.1:{port}", "echo", stdin="olleh\n")
        assert "hello" in played.stdout and "success=True" in played.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_the_environment_authoring_page_example_runs(tmp_path, monkeypatch):
    import importlib
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "environments.md").read_text()
    source = re.search(r"```python\n(# mygames/coin.py\n.*?)```", page, re.S).group(1)
    (tmp_path / "coin_example.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    coin = importlib.import_module("coin_example").CoinFlip
    with GymServer([coin], port=0).run_in_thread() as url, SyncGymClient(url) as client:
        session = client.open("coin", split="test", index=0)
        assert session.observation.text == "I flip a coin. Call it."
        assert session.step("maybe").observation.text == "Say heads or tails."
        while not session.done:
            result = session.step("Action: heads")
        assert result.metrics.turns <= 5
        with pytest.raises(ProtocolError) as info:
            client.open("coin", split="test", index=50)
        assert info.value.code is ErrorCode.INVALID_TASK
