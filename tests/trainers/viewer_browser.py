"""Running `gymwire view` as a process and Debian's Chromium through Playwright (its own browser
download cannot work here): shared by the viewer's browser tests and bench/viewer_load.py."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from gymwire.servers.web.browser import OFFLINE_FLAGS, chromium_path

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def viewer(*paths: str | Path) -> Iterator[str]:
    """`gymwire view PATHS` on a free loopback port; yields its address once it listens."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gymwire.sdk.cli", "view", *map(str, paths), "--port", str(port), "--no-browser"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert f"127.0.0.1:{port}" in line, line + process.stderr.read()
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (Playwright Browser) with a fresh profile."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="gymwire-view-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True, args=list(OFFLINE_FLAGS),
                viewport={"width": 1400, "height": 900},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
