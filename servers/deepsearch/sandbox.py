"""Run untrusted Python in a bubblewrap sandbox with limits; every outcome is text for the agent.

Each program runs in a fresh `python3 -I` (Debian's, /usr/bin/python3) inside `bwrap` (Debian's
bubblewrap) with new user, PID, network, IPC, UTS and cgroup namespaces: no network but its own
loopback, `/usr` read-only, and one writable folder, a private size-capped tmpfs that is its working
directory, $HOME and $TMPDIR and vanishes with it. `prlimit` caps CPU time, address space, file size
and processes; the server caps wall time and output, killing the sandbox (and, through its PID
namespace, everything it started) when either is passed, and runs at most `concurrent_runs`
programs at once (without cgroups, memory is capped per process, so this bounds the total).

The process cap is per user id, so when the server runs as root each program runs under a user id of
its own (from a range no account uses): a fork bomb then exhausts its own cap, not another
session's. Run as another user, the server cannot switch ids, and the process cap is left off
(a fork bomb is still confined to its namespace and stopped at the wall-time limit).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import weakref
from dataclasses import dataclass

__all__ = ["SandboxLimits", "SandboxResult", "run_python", "sandbox_available"]

PYTHON = "/usr/bin/python3"
# User ids from 2,000,000,000 belong to no account on a normal system (far above every distribution's
# ranges); bwrap cannot map ids of 2^31 and more. Each server process (each session's process under
# `--isolation process`) cycles through 1,000 ids of its own, chosen by its pid: an id comes back
# only after 999 other runs, long after the processes of its last run are gone and reaped.
_UID_BASE = 2_000_000_000
_UIDS_PER_PROCESS = 1_000
_PROCESS_SLOTS = 100_000
_runs = itertools.count()


def _sandbox_uid() -> int:
    return _UID_BASE + (os.getpid() % _PROCESS_SLOTS) * _UIDS_PER_PROCESS + next(_runs) % _UIDS_PER_PROCESS


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 512 << 20  # address space of each process
    processes: int = 4  # with the memory cap, bounds a program's memory to 2 GB
    # Programs running at once in one server; more wait their turn (other sessions' searches do not).
    concurrent_runs: int = max(2, os.cpu_count() or 2)
    disk_bytes: int = 64 << 20  # the private tmpfs; also the largest file
    output_bytes: int = 1 << 20  # stdout and stderr together; past it the program is stopped
    shown_chars: int = 4000  # of the output, in the observation
    code_chars: int = 100_000


@dataclass(frozen=True)
class SandboxResult:
    output: str
    exit_code: int | None  # None: stopped by the sandbox (see `stopped`)
    stopped: str | None = None

    def observation(self, shown_chars: int) -> str:
        text = self.output
        if len(text) > shown_chars:
            text = text[:shown_chars] + f"\n... [{len(self.output) - shown_chars} more characters not shown]"
        status = self.stopped or ("finished" if self.exit_code == 0 else f"exit code {self.exit_code}")
        if text and not text.endswith("\n"):
            text += "\n"
        return f"<output>\n{text}</output>\n[{status}]"


def sandbox_available() -> str | None:
    """None when the sandbox can run, else why not (for the agent and the operator)."""
    missing = [tool for tool in ("bwrap", "prlimit") if shutil.which(tool) is None]
    if missing:
        return f"the Python tool is not available on this server ({' and '.join(missing)} not installed: apt-get install bubblewrap util-linux)"
    if not os.path.exists(PYTHON):
        return f"the Python tool is not available on this server ({PYTHON} not installed)"
    return None


def _command(limits: SandboxLimits, with_nproc: bool) -> list[str]:
    caps = [f"--cpu={limits.cpu_seconds}", f"--as={limits.memory_bytes}", f"--fsize={limits.disk_bytes}", "--core=0"]
    if with_nproc:
        caps.append(f"--nproc={limits.processes}")
    jail = [
        "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.disk_bytes), "--tmpfs", "/sandbox", "--chdir", "/sandbox",
        "--clearenv", "--setenv", "HOME", "/sandbox", "--setenv", "TMPDIR", "/sandbox", "--setenv", "PATH", "/usr/bin",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONIOENCODING", "utf-8",
    ]  # fmt: skip
    return ["prlimit", *caps, "--", *jail, PYTHON, "-I", "-"]


async def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code`; returns its output (stdout and stderr interleaved) and how it ended."""
    unavailable = sandbox_available()
    if unavailable:
        return SandboxResult("", None, unavailable)
    if len(code) > limits.code_chars:
        return SandboxResult("", None, f"not run: the code is longer than {limits.code_chars} characters")
    async with _run_slots(limits.concurrent_runs):
        return await _run(code, limits)


_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


def _run_slots(count: int) -> asyncio.Semaphore:
    # One semaphore per event loop: a semaphore belongs to the loop it first waits on.
    loop = asyncio.get_running_loop()
    if loop not in _slots:
        _slots[loop] = asyncio.Semaphore(count)
    return _slots[loop]


async def _run(code: str, limits: SandboxLimits) -> SandboxResult:
    as_root = os.geteuid() == 0
    ids = {}
    if as_root:
        uid = _sandbox_uid()
        ids = {"user": uid, "group": uid, "extra_groups": []}
    process = await asyncio.create_subprocess_exec(
        *_command(limits, with_nproc=as_root),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True, **ids,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    stopped = None
    chunks: list[bytes] = []

    async def feed_read_and_wait() -> None:
        nonlocal stopped
        try:
            process.stdin.write(code.encode())
            await process.stdin.drain()
            process.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it ended without reading all of its program: its output says why
        size = 0
        while chunk := await process.stdout.read(1 << 16):
            size += len(chunk)
            if size > limits.output_bytes:
                chunks.append(chunk[: len(chunk) - (size - limits.output_bytes)])
                stopped = f"stopped: printed more than {limits.output_bytes} bytes"
                return
            chunks.append(chunk)
        await process.wait()

    try:
        await asyncio.wait_for(feed_read_and_wait(), limits.wall_seconds)
    except asyncio.TimeoutError:
        stopped = f"stopped: ran past the {limits.wall_seconds:g} s wall-time limit"
    finally:
        if process.returncode is None:
            _kill(process)
        # Until 3.12, asyncio's wait() returns only once every pipe is closed: drain what the killed
        # program left in its stdout (a pipe buffer at most) to reach the end.
        while await process.stdout.read(1 << 16):
            pass
        status = await process.wait()
    output = b"".join(chunks).decode("utf-8", errors="replace")
    if stopped:
        return SandboxResult(output, None, stopped)
    # bwrap reports a program killed by signal N as exit status 128 + N; prlimit passes it on.
    if status > 128 and status - 128 in _LIMIT_SIGNALS:
        return SandboxResult(output, None, _LIMIT_SIGNALS[status - 128])
    if status < 0:
        return SandboxResult(output, None, f"stopped by signal {signal.Signals(-status).name}")
    return SandboxResult(output, status)


_LIMIT_SIGNALS = {
    signal.SIGXCPU: "stopped: used up its CPU-time limit",
    signal.SIGXFSZ: "stopped: wrote a file past the size limit",
    signal.SIGKILL: "stopped: killed (SIGKILL)",
}


def _kill(process: asyncio.subprocess.Process) -> None:
    # The whole session: prlimit execs bwrap, whose PID-namespace init dies with it and takes every
    # process of the program along.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
