"""Deep Search's Python sandbox against a hostile agent (issue #25), through a real gymwire server:
the program sees nothing of the server (environment, files, processes), every writable place counts
against one cap, memory that is not a file is refused, and one session's long programs never hold
another session's run behind a queue."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from gymwire.sdk.client import GymClient
from gymwire.sdk.server import GymServer
from gymwire.servers.deepsearch import DeepSearchEnv
from gymwire.servers.deepsearch.corpus import builtin_questions_dir
from gymwire.servers.deepsearch.sandbox import SandboxLimits, sandbox_available, seccomp_filter

pytestmark = pytest.mark.skipif(sandbox_available() is not None, reason=str(sandbox_available()))

DISK = 16 << 20
DECOYS = {"GYMWIRE_TOKEN": "decoy-gymwire-token-5f1c", "OPENAI_API_KEY": "sk-decoy-openai-9b2e"}


class CappedEnv(DeepSearchEnv):
    sandbox_limits = SandboxLimits(wall_seconds=8, cpu_seconds=4, memory_bytes=256 << 20, disk_bytes=DISK)


class OneAtATimeEnv(DeepSearchEnv):
    # One program at a time: the fair queue decides every turn.
    sandbox_limits = SandboxLimits(wall_seconds=8, cpu_seconds=4, memory_bytes=256 << 20, concurrent_runs=1)


@pytest.fixture(scope="module")
def url():
    server = GymServer({"deepsearch": CappedEnv, "one-at-a-time": OneAtATimeEnv}, port=0)
    with server.run_in_thread() as server_url:
        yield server_url


async def run(url: str, code: str, env: str = "deepsearch") -> str:
    async with GymClient(url) as client:
        async with client.session(env, split="test", index=0) as session:
            result = await asyncio.wait_for(session.step(f"<python>\n{code}\n</python>"), 120)
            return result.observation.text


# ----------------------------------------------------------------------------- nothing of the server

SNOOP = r"""
import os, subprocess
seen = [repr(dict(os.environ))]
for pid in os.listdir('/proc'):
    if pid.isdigit():
        for name in ('environ', 'cmdline'):
            try:
                seen.append(open(f'/proc/{pid}/{name}', 'rb').read().decode(errors='replace'))
            except OSError as exc:
                seen.append(repr(exc))
for tool in (['ps', 'eww', '-A'], ['cat', '/proc/self/environ']):
    try:
        seen.append(subprocess.run(tool, capture_output=True, text=True).stdout)
    except OSError as exc:
        seen.append(repr(exc))
print('\n'.join(seen))
print('PIDS', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
print('ROOT', sorted(os.listdir('/')), 'LOCAL', os.path.exists('/usr/local'))
for path in ({server_files!r}, '/etc/passwd', '/root', '/work', '/sys/class'):
    print('FILE', path, os.path.exists(path))
"""


async def test_decoy_secrets_and_server_files_never_reach_an_observation(url, monkeypatch):
    for name, value in DECOYS.items():
        monkeypatch.setenv(name, value)  # the server runs in this process: its environment is this one
    # The gold answers: an agent that could read them would be paid for reading, not searching.
    server_files = str(Path(builtin_questions_dir(), "test.jsonl").resolve())
    assert Path(server_files).exists()
    text = await run(url, SNOOP.replace("{server_files!r}", repr(server_files)))
    assert "[finished]" in text, text[-500:]
    for value in DECOYS.values():
        assert value not in text
    # Its own processes only: bwrap's init (pid 1), python and what python started.
    pids = [int(p) for p in re.search(r"PIDS \[(.*)\]", text).group(1).split(", ")]
    assert min(pids) == 1 and max(pids) < 10, pids
    assert re.search(r"ROOT \['bin', 'dev', 'lib', 'lib64', 'proc', 'sandbox', 'tmp', 'usr'\] LOCAL False", text), text[-800:]
    assert re.findall(r"FILE \S+ (\w+)", text) == ["False"] * 5, text[-800:]


# ----------------------------------------------------------------------------- one cap on writes

FILL = r"""
import errno, os
places = ['/sandbox/a', '/tmp/b', '/dev/shm/c', '/d', '/dev/e', '/sandbox/sub/f']
os.mkdir('/sandbox/sub')
total = 0
for path in places:
    try:
        with open(path, 'wb', buffering=0) as out:
            for _ in range({mb}):
                out.write(b'x' * (1 << 20))
                total += 1 << 20
        print(path, 'wrote it all')
    except OSError as exc:
        print(path, 'refused:', errno.errorcode.get(exc.errno), exc.strerror)
print('TOTAL', total)
"""


async def test_every_writable_place_counts_against_one_cap(url):
    # Each place on its own would take 12 MB of the 16 MB cap; together they get at most the cap.
    text = await run(url, FILL.replace("{mb}", "12"))
    total = int(re.search(r"TOTAL (\d+)", text).group(1))
    assert total <= DISK, text
    assert text.count("wrote it all") == 1, text
    assert text.count("refused: ENOSPC") == 5, text


async def test_memory_that_is_not_a_file_and_nested_namespaces_are_refused(url):
    code = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
try:
    os.memfd_create('m')
    print('memfd made')
except OSError as exc:
    print('memfd refused', exc.errno)
print('shmget', libc.shmget(0, 1 << 20, 0o1000 | 0o600), ctypes.get_errno())
print('unshare', libc.unshare(0x10000000 | 0x00020000), ctypes.get_errno())
"""
    text = await run(url, code)
    assert "memfd refused 1" in text and "shmget -1 1" in text, text
    assert re.search(r"unshare -1 \d+", text), text


KERNEL_MEMORY_AND_SURFACE = r"""
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
def report(name, result):
    print(name, result, ctypes.get_errno())
report('msgget', libc.msgget(0, 0o1000 | 0o600))
report('semget', libc.semget(0, 32000, 0o1000 | 0o600))
report('mq_open', libc.mq_open(b'/q', os.O_CREAT | os.O_RDWR, 0o600, None))
params = ctypes.create_string_buffer(120)
report('io_uring_setup', libc.syscall(425, 8, params))
add_key = {'x86_64': 248, 'aarch64': 217}[platform.machine()]
report('add_key', libc.syscall(add_key, b'user', b'stash', b'kept after the run', 18, -4))
"""


async def test_kernel_memory_outside_the_cap_is_refused(url):
    """Found by the red-team review: System V message queues (32,000 of 16 KB held 488 MB under a
    64 MB cap) and semaphore sets (100 sets of 32,000 took 195 MB of slab in 2.7 s), POSIX message
    queues, io_uring and keyrings all worked; each now fails with EPERM."""
    text = await run(url, KERNEL_MEMORY_AND_SURFACE)
    for call in ("msgget", "semget", "mq_open", "io_uring_setup", "add_key"):
        assert f"{call} -1 1\n" in text, text


def test_the_seccomp_program_is_well_formed():
    for machine in ("x86_64", "aarch64"):
        program = seccomp_filter(machine)
        # classic BPF jumps are 8 bits: the program must stay far below 256 instructions
        assert program is not None and len(program) % 8 == 0 and len(program) // 8 <= 32
    assert seccomp_filter("s390x") is None


# ----------------------------------------------------------------------------- fairness

HOG = "import time\nprint('START', time.time(), flush=True)\ntime.sleep(1.5)"


async def test_a_print_of_b_waits_for_no_queue_while_others_run_long_programs(url):
    """Three sessions run 1.5 s programs back to back on one slot; B's print, sent once each of them
    has run, gets the next free slot: no other program starts between B's request and B's run
    (first come, first served would start the two queued ones first)."""
    hog_starts: list[float] = []
    each_ran = asyncio.Event()
    stop = asyncio.Event()

    async with GymClient(url) as client:

        async def hog() -> int:
            async with client.session("one-at-a-time", split="test", index=0, max_turns=1000) as session:
                runs = 0
                while not stop.is_set():
                    text = (await session.step(f"<python>\n{HOG}\n</python>")).observation.text
                    hog_starts.append(float(re.search(r"START ([\d.]+)", text).group(1)))
                    runs += 1
                    if len(hog_starts) >= 3:  # one slot, three sessions: each has run once
                        each_ran.set()
                return runs

        hogs = [asyncio.ensure_future(hog()) for _ in range(3)]
        await asyncio.wait_for(each_ran.wait(), 120)
        await asyncio.sleep(0.3)  # the hogs are queued again behind the running one
        async with client.session("one-at-a-time", split="test", index=1) as b:
            sent = time.time()
            step = b.step("<python>import time; print('B', time.time())</python>")
            text = (await asyncio.wait_for(step, 120)).observation.text
        b_started = float(re.search(r"B ([\d.]+)", text).group(1))
        stop.set()
        runs = await asyncio.wait_for(asyncio.gather(*hogs), 120)
    assert all(r >= 1 for r in runs), runs
    overtaking = [t for t in hog_starts if sent < t < b_started]
    assert overtaking == [], f"{len(overtaking)} long program(s) started between B's request and its run"


OUT_OF_FILES = r"""
import asyncio, os, resource
from gymwire.servers.deepsearch.sandbox import run_python
async def main():
    loop_ready = await run_python("print('first')")  # the event loop's own files are open now
    open_now = len(os.listdir('/proc/self/fd'))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    result = await run_python("print('second')")
    print(loop_ready.exit_code, '|', result.stopped)
asyncio.run(main())
"""


def test_a_server_out_of_files_answers_not_run_instead_of_crashing_the_session():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", OUT_OF_FILES], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("0 | not run: the server could not start the sandbox"), done.stdout


async def test_only_the_distributions_folders_of_usr_are_seen(url):
    """Found by the red-team review: all of /usr was bound but /usr/local, so a probe file in
    /usr/src (a usual home of an application and its .env in an image) was read by the agent."""
    text = await run(url, "import os\nprint(sorted(os.listdir('/usr')))\nprint([os.path.exists(p) for p in ('/usr/src', '/usr/local', '/usr/include')])")
    seen = set(eval(re.search(r"\[.*\]", text).group(0)))
    assert seen and seen <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "libexec", "share"}, text
    assert "[False, False, False]" in text, text


async def test_this_package_is_hidden_where_a_bound_folder_holds_it(monkeypatch):
    """Installed under /usr/lib (a distribution's package of gymwire), the gold answers of the
    built-in questions would be in a bound folder: bind the folder that holds this checkout as if it
    were one, and the package's folders inside it are empty."""
    from gymwire.servers.deepsearch import sandbox
    from gymwire.servers.deepsearch.sandbox import run_python

    data = builtin_questions_dir()
    holder = str(data.parents[3])  # a folder above the package, standing for /usr/lib
    monkeypatch.setattr(sandbox, "_system_folders", lambda: ["/usr/bin", "/usr/lib", "/usr/lib64", holder])
    sandbox._own_folders.cache_clear()
    try:
        code = f"import os\nprint('holder', os.path.isdir({holder!r}))\nprint('data', os.path.exists({str(data)!r}))"
        result = await run_python(code, SandboxLimits(wall_seconds=8))
    finally:
        sandbox._own_folders.cache_clear()
    assert "holder True" in result.output and "data False" in result.output, result.output
