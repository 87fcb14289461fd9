"""Careless invocations of every `gymwire` command, as a new user types them: wrong types, missing
files, held ports, ports over 65535, unreachable servers, missing extras, no GPU, bad YAML keys.
Each must end with a non-zero exit status and exactly one line on stderr that names the problem
and says what to do, never a traceback.

Most run in-process through `gymwire.sdk.cli.main` (fast); the missing extras run in a
subprocess whose import system hides the extra's modules, as on a machine without it."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from gymwire.sdk.cli import main
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from hiding_cli import HIDING_CLI

# Words by which a line says what to do.
ADVICE = ("give", "choose", "use ", "pass", "set ", "check", "is the", "is `", "fix", "pip install", "see gymwire", "start",
          "leave", "run ", "name ", "drop", "try", "must", "should", "needs", "takes", "expected", "reinstall")


def assert_one_line_error(code: int, err: str, needles: tuple[str, ...]) -> None:
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("gymwire"), line
    for needle in needles:
        assert needle.lower() in line.lower(), (needle, line)
    assert any(word in line.lower() for word in ADVICE), f"says no remedy: {line}"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, int]]:
    """A port held by a listening socket, and one nobody listens on."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    yield {"HELD": held.getsockname()[1], "CLOSED": closed}
    held.close()


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """An ordinary HTTP server: neither a gymwire server nor an OpenAI-compatible endpoint."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def gym() -> Iterator[str]:
    with GymServer([GuessEnv], port=0).run_in_thread() as url:
        yield url


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("careless")
    (root / "broken_env.py").write_text("from gymwire.sdk import Environment\nclass Broken(Environment)\n    name = 'b'\n")
    (root / "bad.yaml").write_text("env: {name: guess\nmodel: [\n")
    (root / "list.yaml").write_text("- env\n- model\n")
    (root / "typo.yaml").write_text("env: {name: guess}\nmodel: {tiny: {}}\nrolout: {group_size: 4}\n")
    (root / "many.yaml").write_text(
        "env: {name: guess, colour: red}\nmodel: {tiny: {n_layer: two}}\nalgorithm: {lr: fast, estimator: ppo}\ntrain: {stepz: 3}\n"
    )
    (root / "good.yaml").write_text("env: {name: guess, options: {low: 1, high: 7}}\nmodel: {tiny: {numbers: 10, corpus_episodes: 2}}\n")
    (root / "envcfg-bad.yaml").write_text("guess:\n  options: {low: 1}\n  max_turns: 0\n  colour: red\n")
    (root / "envcfg-options.yaml").write_text("guess:\n  options: {lo: 1}\n")
    (root / "envcfg-values.yaml").write_text("guess:\n  options: {low: 9, high: 2}\n")
    (root / "empty").mkdir()
    (root / "previous" / "metrics.jsonl").parent.mkdir()
    (root / "previous" / "metrics.jsonl").write_text('{"step": 1}\n')
    (root / "other-eval").mkdir()
    (root / "other-eval" / "run.json").write_text(json.dumps({"format": "gymwire.eval/1", "model": "m", "split": "test",
                                                             "sampling": {"temperature": 0.7}, "envs": {}}))
    (root / "launch.yaml").write_text("model: {}\nbogus: 1\n")
    return root


# ------------------------------------------------------------------------------------ the cases

# (argv, words the line must contain). Placeholders: HELD, CLOSED (ports), HTTP (an HTTP server's
# port), GYM (a guess server's URL), F/ (the folder of `files`).
CASES: list[tuple[str, tuple[str, ...]]] = [
    # gymwire itself
    ("", ("command",)),
    ("nosuch", ("invalid choice", "nosuch")),
    ("version --verbose", ("unrecognized", "--verbose")),
    ("spec extra", ("unrecognized",)),
    # serve
    ("serve", ("environment",)),
    ("serve guess --port 99999", ("port 99999", "65535")),
    ("serve guess --port -5", ("port -5", "65535")),
    ("serve guess --port eighty", ("'eighty'", "port")),
    ("serve guess --metrics-port 70000", ("--metrics-port", "70000")),
    ("serve guess --port HELD", ("in use", "--port")),
    ("serve nosuchenv", ("nosuchenv",)),
    ("serve gymwire.servers.web:WebArenaEnv", ("webarena", "tasks")),
    ("serve F/broken_env.py:Broken", ("syntax error", "broken_env.py")),
    ("serve no_such_module_x:Env", ("no_such_module_x",)),
    ("serve guess --isolation fork", ("invalid choice", "fork")),
    ("serve guess --max-sessions -1", ("max_sessions",)),
    ("serve guess --max-inflight x", ("invalid int", "'x'")),
    ("serve guess --host 300.1.1.1", ("300.1.1.1", "--host")),
    ("serve guess --log-level loud", ("invalid choice", "loud")),
    # envs, play
    ("envs", ("required", "url")),
    ("envs 127.0.0.1:CLOSED", ("cannot reach", "gymwire serve")),
    ("envs http://127.0.0.1:CLOSED", ("not a server address", "ws://")),
    ("envs ws://127.0.0.1:HTTP", ("not a gymwire server",)),
    ("envs ws://127.0.0.1:99999", ("99999",)),
    ("play 127.0.0.1:CLOSED guess", ("cannot reach",)),
    ("play GYM guess --index 3", ("--index needs --split",)),
    ("play GYM guess --index three", ("invalid int", "'three'")),
    ("play GYM nosuch --split test", ("UNKNOWN_ENV", "nosuch")),
    ("play GYM guess --split dev", ("INVALID_TASK", "dev")),
    # conformance
    ("conformance 127.0.0.1:CLOSED", ("cannot",)),
    ("conformance http://127.0.0.1:1", ("not a server address",)),
    ("conformance GYM --options notjson", ("not JSON",)),
    ("conformance GYM --options [1]", ("JSON object",)),
    ("conformance GYM --level max", ("invalid choice", "max")),
    ("conformance GYM --expected-failures F/missing.txt", ("--expected-failures",)),
    ("conformance GYM --max-wait soon", ("invalid float", "'soon'")),
    # agentgym-serve
    ("agentgym-serve guess --port 99999", ("port 99999",)),
    ("agentgym-serve guess --port HELD", ("--port",)),
    ("agentgym-serve nosuchenv", ("nosuchenv",)),
    ("agentgym-serve guess --option novalue", ("novalue",)),
    ("agentgym-serve guess --idle-timeout x", ("invalid float",)),
    # train
    ("train", ("required", "config")),
    ("train F/missing.yaml", ("missing.yaml", "does not exist")),
    ("train F/bad.yaml", ("not valid YAML",)),
    ("train F/list.yaml", ("mapping",)),
    ("train F/typo.yaml", ("rolout", "unknown key")),
    ("train F/many.yaml", ("env.colour", "model.tiny.n_layer", "algorithm.lr", "train.stepz")),
    ("train F/good.yaml --steps many", ("invalid int", "'many'")),
    ("train F/good.yaml --steps 0 --output-dir F/r1", ("train.steps", ">= 1")),
    ("train F/good.yaml --set algorithm.estimator", ("--set needs KEY=VALUE",)),
    ("train F/good.yaml --set algorithm.lr=fast --output-dir F/r2", ("algorithm.lr",)),
    ("train F/good.yaml --set algorithm.estimator=ppo --output-dir F/r3", ("algorithm.estimator", "grpo")),
    ("train F/good.yaml --set horizon=staged:x --output-dir F/r4", ("horizon",)),
    ("train F/good.yaml --set env.server=ws://127.0.0.1:CLOSED --output-dir F/r5", ("env.server", "cannot connect")),
    ("train F/good.yaml --set env.server=http://127.0.0.1:1 --output-dir F/r6", ("env.server", "ws://")),
    ("train F/good.yaml --set env.name=nosuch --output-dir F/r7", ("env.name", "nosuch")),
    ("train F/good.yaml --set env.options={lo:1} --output-dir F/r8", ("env.options", "lo")),
    ("train F/good.yaml --set env.options={low:9,high:2} --output-dir F/r9", ("env.options", "low")),
    ("train F/good.yaml --device cuda:7 --output-dir F/r10", ("model.device", "cuda:7")),
    ("train F/good.yaml --device tpu --output-dir F/r11", ("model.device", "tpu")),
    ("train F/good.yaml --set model.path=F/nothing --set model.tiny=null --output-dir F/r12", ("config.json", "model.path")),
    ("train F/good.yaml --resume --output-dir F/r13", ("nothing to resume",)),
    ("train F/good.yaml --resume --overwrite --output-dir F/r14", ("resume", "overwrite")),
    ("train F/good.yaml --output-dir F/previous", ("previous run", "--overwrite")),
    ("train F/good.yaml --set env.train_split=dev --output-dir F/r15", ("dev", "train_split")),
    # eval
    ("eval", ("give MODEL",)),
    ("eval smollm2", ("environment",)),
    ("eval smollm2 guess --base-url http://127.0.0.1:CLOSED/v1", ("--base-url", "model server")),
    ("eval smollm2 guess --base-url http://127.0.0.1:HTTP/v1", ("--base-url",)),
    ("eval smollm2 nosuchenv", ("nosuchenv",)),
    ("eval smollm2 guess --env-config F/missing.yaml", ("missing.yaml",)),
    ("eval smollm2 guess --env-config F/bad.yaml", ("not valid YAML",)),
    ("eval smollm2 guess --env-config F/envcfg-bad.yaml", ("max_turns", "colour")),
    ("eval smollm2 guess --env-config F/envcfg-options.yaml", ("guess", "lo")),
    ("eval smollm2 guess --env-config F/envcfg-values.yaml", ("guess", "low")),
    ("eval smollm2 guess --tasks some", ("--tasks", "'some'")),
    ("eval smollm2 guess --max-turns 0", ("--max-turns",)),
    ("eval smollm2 guess --concurrency 0", ("--concurrency",)),
    ("eval smollm2 guess --temperature -1", ("temperature",)),
    ("eval smollm2 guess --top-p 2", ("top_p",)),
    ("eval smollm2 guess --device cuda:7", ("--device", "cuda:7")),
    ("eval smollm2 guess --split dev", ("dev", "--split")),
    ("eval smollm2 ws://127.0.0.1:CLOSED", ("cannot reach",)),
    ("eval F/nothing.gguf guess", ("nothing.gguf",)),
    ("eval --compare F/missing", ("results.json",)),
    ("eval --rerun F/missing", ("run.json",)),
    ("eval smollm2 guess --output F/other-eval --temperature 0.5", ("other settings", "--overwrite")),
    # view
    ("view F/missing", ("does not exist",)),
    ("view F/previous --port 99999", ("port 99999",)),
    ("view F/previous --port HELD --no-browser", ("in use",)),
    ("view F/empty --no-browser --port 0", ("no run here",)),
    # model
    ("model", ("required", "action")),
    ("model path nosuch", ("invalid choice", "nosuch")),
    ("model serve smollm2 --port HELD", ("in use", "--port")),
    ("model serve smollm2 --port 70000", ("port 70000",)),
    ("model serve F/nothing.gguf", ("nothing.gguf",)),
    ("model serve smollm2 --threads 0", ("--threads",)),
    ("model prepare F/nothing.gguf F/out", ("nothing.gguf",)),
    # bench
    ("bench --bogus", ("unrecognized", "--bogus")),
    # openrlhf
    ("openrlhf", ("required",)),
    ("openrlhf launch F/missing.yaml --dry-run", ("missing.yaml",)),
    ("openrlhf launch F/launch.yaml --dry-run", ("bogus",)),
    ("openrlhf prepare guess --url ws://127.0.0.1:CLOSED --out F/tasks.jsonl", ("cannot",)),
]


def _argv(text: str, ports: dict[str, int], http_port: int, gym: str, files: Path) -> list[str]:
    words = []
    for word in text.split():
        for key, value in (("CLOSED", ports["CLOSED"]), ("HELD", ports["HELD"]), ("HTTP", http_port)):
            word = word.replace(key, str(value))
        words.append(word.replace("GYM", gym).replace("F/", f"{files}/"))
    return words


@pytest.mark.parametrize("text,needles", CASES, ids=[case[0] or "(nothing)" for case in CASES])
def test_a_careless_invocation_is_one_line(text, needles, ports, http_port, gym, files, capsys, monkeypatch):
    monkeypatch.chdir(files)  # the working folder a command may write into (no repository root)
    monkeypatch.setenv("GYMWIRE_MODEL_CACHE", str(files / "model-cache"))
    code = main(_argv(text, ports, http_port, gym, files))
    assert_one_line_error(code, capsys.readouterr().err, needles)


# ------------------------------------------------------------------------------------ missing extras


EXTRA_CASES = [
    ("minigrid", "serve babyai --port 0", "gymwire[babyai]"),
    ("prometheus_client", "serve guess --port 0 --metrics-port 0", "gymwire[metrics]"),
    ("fastapi,uvicorn", "bench --quick", "gymwire[bench]"),
    ("orjson", "view .", "gymwire[view]"),
    ("openai", "eval m guess --base-url http://127.0.0.1:CLOSED/v1", "gymwire[eval]"),
    ("torch", "train F/good.yaml", "gymwire[train]"),
]


@pytest.mark.parametrize("hidden,text,pip_line", EXTRA_CASES, ids=[case[1] for case in EXTRA_CASES])
def test_a_missing_extra_names_its_pip_line(hidden, text, pip_line, ports, http_port, gym, files):
    argv = _argv(text, ports, http_port, gym, files)
    result = subprocess.run([sys.executable, "-c", HIDING_CLI, hidden, *argv], capture_output=True, text=True,
                            timeout=120, cwd=files)
    assert_one_line_error(result.returncode, result.stderr, (pip_line,))
    assert not list(files.glob("*.json")), "a command wrote into the working folder"


def test_there_are_at_least_eighty_careless_invocations():
    assert len(CASES) + len(EXTRA_CASES) >= 80
    commands = {text.split()[0] for text, _ in CASES if text} | {text.split()[0] for _, text, _ in EXTRA_CASES}
    assert commands >= {"serve", "envs", "play", "conformance", "agentgym-serve", "train", "eval", "view", "model", "bench", "openrlhf"}
