"""Deep Search's Python sandbox against hostile programs, with the default limits: what each got.

    python bench/sandbox_hostile.py

Prints, per program: whether decoy secrets of the server's environment came back, how many MB the
program wrote in all across /sandbox, /tmp, /dev/shm, / and /dev (one cap), whether memfd and
System V memory were refused, how many empty files it made before its time ran out (file metadata
is kernel memory the tmpfs size does not count) and the kernel slab it held then, and how long a
fresh session's `print` waited while three other sessions ran long programs on one slot.
docs/security.md quotes a run.
"""

from __future__ import annotations

import asyncio
import os
import re
import time

from gymwire.servers.deepsearch.sandbox import SandboxAccount, SandboxLimits, run_python

DECOY = "decoy-secret-for-the-sandbox-check"

SNOOP = """
import os
for pid in os.listdir('/proc'):
    if pid.isdigit():
        print(open(f'/proc/{pid}/environ', 'rb').read(), open(f'/proc/{pid}/cmdline', 'rb').read())
print(dict(os.environ))
"""
FILL = """
total = 0
for path in ['/sandbox/a', '/tmp/b', '/dev/shm/c', '/d', '/dev/e']:
    try:
        with open(path, 'wb', buffering=0) as out:
            for _ in range(256):
                out.write(b'x' * (1 << 20)); total += 1
    except OSError:
        pass
print('MB', total)
"""
MEMORY = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
try:
    os.memfd_create('m'); print('memfd allowed')
except OSError:
    print('memfd refused')
print('shmget refused' if libc.shmget(0, 1 << 20, 0o1000 | 0o600) < 0 else 'shmget allowed')
"""
INODES = """
import os, sys
n = 0
while True:
    if n % 10000 == 0:
        os.mkdir(f'd{n // 10000}')
        sys.stdout.write(f'FILES {n}\\n'); sys.stdout.flush()
    open(f'd{n // 10000}/{n}', 'w').close()
    n += 1
"""
HOG = "import time; time.sleep(3)"


def slab_kb() -> int:
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) for line in meminfo if line.startswith("Slab:"))


async def fairness() -> float:
    limits = SandboxLimits(concurrent_runs=1)
    hogs = [SandboxAccount() for _ in range(3)]
    stop = False

    async def hog(account: SandboxAccount) -> None:
        while not stop:
            await run_python(HOG, limits, account)

    tasks = [asyncio.ensure_future(hog(a)) for a in hogs]
    while not all(a.used_seconds for a in hogs):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await run_python("print(1)", limits, SandboxAccount())
    waited = time.monotonic() - started
    stop = True
    await asyncio.gather(*tasks)
    return waited


async def main() -> None:
    os.environ["GYMWIRE_TOKEN"] = os.environ["OPENAI_API_KEY"] = DECOY
    limits = SandboxLimits()
    snoop = await run_python(SNOOP, limits)
    print(f"decoy secrets in the observation: {DECOY in snoop.output}")
    fill = await run_python(FILL, limits)
    written = re.search(r"MB (\d+)", fill.output).group(1)  # type: ignore[union-attr]
    print(f"written in all across 5 places, each tried with 256 MB: {written} MB (cap {limits.disk_bytes >> 20} MB)")
    print((await run_python(MEMORY, limits)).output.strip().replace("\n", ", "))
    before = slab_kb()
    flood = asyncio.ensure_future(run_python(INODES, limits))
    peak = before
    while not flood.done():
        peak = max(peak, slab_kb())
        await asyncio.sleep(0.2)
    files = max(int(n) for n in re.findall(r"FILES (\d+)", flood.result().output))
    print(f"empty files made before the limits stopped it: {files:,} ({flood.result().stopped}); "
          f"kernel slab grew by up to {(peak - before) / 1024:.0f} MB, freed with the run")
    print(f"a fresh session's print waited {await fairness():.1f} s behind 3 sessions running 3 s programs on 1 slot")


if __name__ == "__main__":
    asyncio.run(main())
