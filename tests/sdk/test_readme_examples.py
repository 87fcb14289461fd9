"""The Python examples of the README and docs/environments.md run as scripts, against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_URL = "ws://127.0.0.1:8765"


def _client_example(page: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    (source,) = [b for b in blocks if "GymClient(" in b]
    assert EXAMPLE_URL in source
    return source


def _run_script(source: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "example.py"
    script.write_text(source)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)


def test_the_readme_python_example_runs_as_a_script(tmp_path):
    with GymServer([GuessEnv], port=0).run_in_thread() as url:
        result = _run_script(_client_example("README.md").replace(EXAMPLE_URL, url), tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith("I am thinking of a whole number from 1 to 100")
    assert "lower" in second or "higher" in second


def test_the_environment_page_client_example_runs_as_a_script(tmp_path):
    page = "docs/environments.md"
    page_text = (ROOT / page).read_text()
    coin = re.search(r"```python\n(# mygames/coin.py\n.*?)```", page_text, re.S).group(1)
    (tmp_path / "coin_page.py").write_text(coin)
    sys.path.insert(0, str(tmp_path))
    try:
        from coin_page import CoinFlip
    finally:
        sys.path.remove(str(tmp_path))
    with GymServer([CoinFlip], port=0).run_in_thread() as url:
        result = _run_script(_client_example(page).replace(EXAMPLE_URL, url), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("I flip a coin. Call it.")
