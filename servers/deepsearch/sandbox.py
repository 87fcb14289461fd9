"""Run untrusted Python in a bubblewrap sandbox with limits; every outcome is text for the agent.

What the program sees: a fresh `python3 -I` (Debian's, /usr/bin/python3) inside `bwrap` (Debian's
bubblewrap) with new user, PID, network, IPC, UTS and cgroup namespaces. Nothing of the server: bwrap
starts with an empty environment (so its PID 1 inside, whose /proc/1/environ the program can read,
holds no server variable), the only files are the distribution's folders of /usr read-only (bin,
lib, share...; not /usr/local, where pip installs system-wide, nor /usr/src or any other), /proc
shows only the program's own processes, the network is a loopback of its own with nothing listening,
and it cannot make user namespaces of its own (which would let it mount tmpfs outside the cap).

One cap on writes: the sandbox's whole root is one tmpfs of `disk_bytes` (bwrap's `--size` on `/`),
and every writable place is a folder of it: the work folder /sandbox (its working directory and
$HOME), /tmp, /dev/shm, / itself. /dev holds only the devices Python needs, bound from the host.
Memory that would escape that cap without being a file is refused by a seccomp filter: memfd_create,
System V shared memory, message queues and semaphores, POSIX message queues (and io_uring, keyrings,
BPF, userfaultfd and perf events, which no program here needs). Per process, `prlimit` caps CPU time, address space, file size,
open files and (under root) processes. The server caps wall time and output, killing the sandbox
(and, through its PID namespace, everything it started) when either is passed.

Fairness: at most `concurrent_runs` programs run at once in one server process. A free slot goes to
the waiting session that has used the sandbox least so far (ties: first come), so a session that
keeps running long programs never delays another session's run by more than the programs already
running: a newcomer's `print` waits for one slot, not for the queue.

The process cap is per user id, so when the server runs as root each program runs under a user id of
its own (from a range no account uses): a fork bomb then exhausts its own cap, not another
session's. Run as another user, the server cannot switch ids, and the process cap is left off
(a fork bomb is still confined to its namespace and stopped at the wall-time limit).
docs/security.md has the threat model and the figures of the tests.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import heapq
import itertools
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SandboxAccount", "SandboxLimits", "SandboxResult", "run_python", "sandbox_available"]

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
    open_files: int = 64  # per process; also bounds the kernel buffers of its pipes and sockets
    # Programs running at once in one server; more wait their turn, least-used session first.
    concurrent_runs: int = max(2, os.cpu_count() or 2)
    disk_bytes: int = 64 << 20  # everything the program writes anywhere, together; also the largest file
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


class SandboxAccount:
    """One session's use of the sandbox: the seconds its programs held a slot. The fair queue serves
    the least-used waiting session first."""

    __slots__ = ("used_seconds", "__weakref__")

    def __init__(self) -> None:
        self.used_seconds = 0.0


def sandbox_available() -> str | None:
    """None when the sandbox can run, else why not (for the agent and the operator)."""
    missing = [tool for tool in ("bwrap", "prlimit") if shutil.which(tool) is None]
    if missing:
        return f"the Python tool is not available on this server ({' and '.join(missing)} not installed: apt-get install bubblewrap util-linux)"
    if not os.path.exists(PYTHON):
        return f"the Python tool is not available on this server ({PYTHON} not installed)"
    version = _bwrap_version()
    if version < (0, 8):
        shown = ".".join(map(str, version)) or "unknown"
        return f"the Python tool is not available on this server (bubblewrap {shown} is older than 0.8, which --disable-userns needs)"
    return None


@functools.lru_cache(maxsize=1)
def _bwrap_version() -> tuple[int, ...]:
    try:
        out = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    match = re.search(r"(\d+)\.(\d+)", out)
    return tuple(int(part) for part in match.groups()) if match else ()


# ----------------------------------------------------------------------------- the jail

# What of /usr the program sees: the distribution's own folders (the interpreter, its libraries, shared
# data), never the rest. /usr/local is where pip installs system-wide (this server's package, with
# its tasks' gold answers); /usr/src/app is a usual home for an application and its .env in an image;
# an operator may have made any other folder there. A probe file in /usr/src was read before this.
_USR_SYSTEM_FOLDERS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "libexec", "share")


def _system_folders() -> list[str]:
    return [f"/usr/{name}" for name in _USR_SYSTEM_FOLDERS if os.path.isdir(f"/usr/{name}") and not os.path.islink(f"/usr/{name}")]


@functools.lru_cache(maxsize=1)
def _own_folders() -> list[str]:
    """This package's folders where they lie inside a bound system folder (a distribution's package of
    it, `pip --prefix=/usr`): they hold the tasks' gold answers. Hidden behind an empty tmpfs."""
    import gymwire

    bound = [Path(folder) for folder in _system_folders()]
    # (An editable install's __path__ holds a finder's name, not a folder.)
    own = {Path(folder).resolve() for folder in gymwire.__path__ if Path(folder).is_dir()} | {Path(__file__).resolve().parent}
    return sorted(str(folder) for folder in own if any(folder.is_relative_to(top) for top in bound))


# The devices a Python program uses; bound one by one from the host (bwrap's --dev would add an
# unsized tmpfs of its own, outside the cap).
_DEVICES = ("null", "zero", "full", "random", "urandom")


def _command(limits: SandboxLimits, with_nproc: bool, seccomp_fd: int | None) -> list[str]:
    caps = [
        f"--cpu={limits.cpu_seconds}", f"--as={limits.memory_bytes}", f"--fsize={limits.disk_bytes}",
        f"--nofile={limits.open_files}", "--core=0",
    ]  # fmt: skip
    if with_nproc:
        caps.append(f"--nproc={limits.processes}")
    devices = [arg for name in _DEVICES for arg in ("--dev-bind", f"/dev/{name}", f"/dev/{name}")]
    jail = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
        # The root first: every folder and file made below, and every write of the program, is in it.
        "--size", str(limits.disk_bytes), "--tmpfs", "/",
        "--tmpfs", "/usr",  # read-only below, as the host's is: its folders are bound one by one
        *(arg for folder in _system_folders() for arg in ("--ro-bind", folder, folder)),
        *(arg for folder in _own_folders() for arg in ("--tmpfs", folder, "--remount-ro", folder)),
        "--remount-ro", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--proc", "/proc",
        "--dir", "/dev", *devices,
        "--symlink", "/proc/self/fd", "/dev/fd", "--symlink", "/proc/self/fd/0", "/dev/stdin",
        "--symlink", "/proc/self/fd/1", "/dev/stdout", "--symlink", "/proc/self/fd/2", "/dev/stderr",
        "--dir", "/dev/shm", "--dir", "/tmp", "--dir", "/sandbox", "--chdir", "/sandbox",
        "--clearenv", "--setenv", "HOME", "/sandbox", "--setenv", "TMPDIR", "/tmp", "--setenv", "PATH", "/usr/bin",
        "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONIOENCODING", "utf-8",
    ]  # fmt: skip
    if seccomp_fd is not None:
        jail += ["--seccomp", str(seccomp_fd)]
    return [shutil.which("prlimit") or "prlimit", *caps, "--", *jail, PYTHON, "-I", "-"]


# System calls refused, with EPERM. Memory outside the tmpfs cap and outside the address-space limit,
# kept until the run ends: a memfd or a System V segment keeps its pages after it is unmapped, and
# System V message queues and semaphore sets are kernel memory (32,000 queues held 488 MB, and 100
# sets of 32,000 semaphores 195 MB of slab, under a 64 MB cap); POSIX message queues likewise. Then
# kernel interfaces no Python program here needs, each a door to kernel memory or to kernel bugs
# (container runtimes refuse them too): io_uring, keyrings, BPF, userfaultfd and perf events.
# Numbers per architecture (asm/unistd.h).
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_DENIED_SYSCALLS = {
    "x86_64": {
        "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "msgget": 68, "semget": 64, "mq_open": 240,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321, "userfaultfd": 323, "perf_event_open": 298,
    },
    "aarch64": {
        "memfd_create": 279, "memfd_secret": 447, "shmget": 194, "msgget": 186, "semget": 190, "mq_open": 180,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "add_key": 217, "request_key": 218, "keyctl": 219, "bpf": 280, "userfaultfd": 282, "perf_event_open": 241,
    },
}  # fmt: skip
_X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """A classic-BPF seccomp program (bwrap's --seccomp) that fails the denied calls with EPERM and
    every call of another ABI (32-bit, x32) with ENOSYS; None on an architecture not listed."""
    machine = machine or platform.machine()
    if machine not in _AUDIT_ARCH:
        return None
    load_word, jump_eq, jump_ge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, JGE|K, BPF_RET|K
    allow, fail = 0x7FFF0000, 0x00050000  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | errno
    denied = list(_DENIED_SYSCALLS[machine].values())
    checks: list[tuple[int, int]] = [(jump_ge, _X32_SYSCALL_BIT)] if machine == "x86_64" else []
    checks += [(jump_eq, number) for number in denied]
    # Layout: load arch; arch check; load nr; checks...; allow; deny EPERM; deny ENOSYS.
    n = len(checks)
    program = [(load_word, 0, 0, 4), (jump_eq, 0, n + 3, _AUDIT_ARCH[machine]), (load_word, 0, 0, 0)]
    for i, (code, value) in enumerate(checks):
        to_eperm = n - i  # from instruction (3 + i): skip the remaining checks and the allow
        to_enosys = to_eperm + 1
        program.append((code, to_enosys if value == _X32_SYSCALL_BIT else to_eperm, 0, value))
    program += [(ret, 0, 0, allow), (ret, 0, 0, fail | errno.EPERM), (ret, 0, 0, fail | errno.ENOSYS)]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


# ----------------------------------------------------------------------------- the fair queue


class _FairSlots:
    """`count` slots; a freed slot goes straight to the waiter with the least `used_seconds`."""

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, account: SandboxAccount) -> None:
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (account.used_seconds, next(self._arrivals), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # the slot came with the cancellation: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():  # a waiter that was cancelled is skipped
                granted.set_result(None)
                return
        self.free += 1


_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _FairSlots]]" = weakref.WeakKeyDictionary()


def _run_slots(count: int) -> _FairSlots:
    # One queue per event loop (its futures belong to it) and slot count.
    return _slots.setdefault(asyncio.get_running_loop(), {}).setdefault(count, _FairSlots(count))


async def run_python(code: str, limits: SandboxLimits = SandboxLimits(), account: SandboxAccount | None = None) -> SandboxResult:
    """Run `code`; returns its output (stdout and stderr interleaved) and how it ended. `account` is
    the session's (one per environment instance), for the fair queue."""
    unavailable = sandbox_available()
    if unavailable:
        return SandboxResult("", None, unavailable)
    if len(code) > limits.code_chars:
        return SandboxResult("", None, f"not run: the code is longer than {limits.code_chars} characters")
    account = account or SandboxAccount()
    slots = _run_slots(limits.concurrent_runs)
    await slots.acquire(account)
    started = time.monotonic()
    try:
        return await _run(code, limits)
    finally:
        account.used_seconds += time.monotonic() - started
        slots.release()


async def _run(code: str, limits: SandboxLimits) -> SandboxResult:
    as_root = os.geteuid() == 0
    ids = {}
    if as_root:
        uid = _sandbox_uid()
        ids = {"user": uid, "group": uid, "extra_groups": []}
    program = seccomp_filter()
    read_end = None
    try:
        if program is not None:
            read_end, write_end = os.pipe()
            os.write(write_end, program)  # a few hundred bytes: within any pipe's buffer
            os.close(write_end)
        process = await asyncio.create_subprocess_exec(
            *_command(limits, with_nproc=as_root, seccomp_fd=read_end),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, env={}, pass_fds=() if read_end is None else (read_end,), **ids,
        )  # fmt: skip
    except OSError as exc:  # the server is out of files or processes: this run only, not the session
        return SandboxResult("", None, f"not run: the server could not start the sandbox ({exc.strerror or exc}); try again later")
    finally:
        if read_end is not None:
            os.close(read_end)
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
