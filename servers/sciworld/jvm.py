"""ScienceWorld's Java simulator, many simulators to a Java process.

`scienceworld.ScienceWorldEnv` (and AgentGym) starts one JVM per environment. Here one JVM hosts
many: every session gets its own instance of the simulator's entry class (`PythonInterface`),
created through the JVM's py4j gateway. The simulator keeps process-wide state (an object-id
counter, a path-finder cache) and gives wrong observations when two threads call into one JVM at
once, so every call into a JVM runs on that JVM's single worker thread; parallelism comes from
running several JVMs. Sessions are spread over up to `processes` JVMs, each holding at most
`sessions_per_process`; more JVMs start when all are full.

A JVM that dies, or does not answer a call within `call_timeout_s` (it is then killed), takes
only its own sessions down: their calls raise `JavaCrashed` and the pool starts a fresh JVM for
the next session that needs one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

__all__ = ["JavaCrashed", "JavaProcess", "JavaPool", "Simulator", "SimulatorStep", "MISSING_EXTRA"]

MISSING_EXTRA = "ScienceWorld needs its extra and a Java runtime: pip install 'gymwire[sciworld]' (and e.g. apt-get install default-jre-headless)"
try:
    from py4j.protocol import Py4JError, Py4JJavaError
except ImportError as exc:  # pragma: no cover - CI installs the extra
    raise ImportError(f"{MISSING_EXTRA} ({exc})") from exc

T = TypeVar("T")
_WATCH_INTERVAL_S = 0.5  # how often a waiting call checks whether the JVM's running call overran


class JavaCrashed(RuntimeError):
    """The Java process hosting a simulator died or hung; the message says which."""


def _scienceworld() -> tuple[Any, Any, Any, Any]:
    try:
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from scienceworld.constants import BASEPATH, JAR_PATH
    except ImportError as exc:
        raise ImportError(f"{MISSING_EXTRA} ({exc})") from exc
    return launch_gateway, JavaGateway, GatewayParameters, (JAR_PATH, BASEPATH)


class JavaProcess:
    """One JVM and the single thread every call into it runs on. It starts on its first call."""

    def __init__(self, heap_mb: int, call_timeout_s: float) -> None:
        self.heap_mb = heap_mb
        self.call_timeout_s = call_timeout_s
        self.sessions = 0  # simulators handed out and not yet released
        self.dead: str | None = None  # why it stopped serving, once it has
        self._busy_since: float | None = None  # when the running call started (monotonic), None when idle
        self.gateway: Any = None
        self.process: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sciworld-jvm")
        self._thread.submit(self._launch)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _launch(self) -> None:
        if self.dead:
            return
        if shutil.which("java") is None:
            self.dead = "no `java` on PATH: ScienceWorld needs a Java runtime (e.g. apt-get install default-jre-headless)"
            return
        # Serial GC and a heap that gives memory back after sessions close: the JVM's resident
        # size follows the sessions it holds. die_on_exit: the JVM exits with this process.
        javaopts = [f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC", "-XX:MinHeapFreeRatio=10", "-XX:MaxHeapFreeRatio=30"]
        try:
            launch_gateway, JavaGateway, GatewayParameters, (jar, basepath) = _scienceworld()
            # The gateway's loopback port runs any Java it is sent: a token keeps other local
            # processes (a browser page's request, another user) from driving it.
            port, token, self.process = launch_gateway(
                classpath=jar, cwd=basepath, die_on_exit=True, return_proc=True, javaopts=javaopts, enable_auth=True
            )
            parameters = GatewayParameters(port=port, auto_field=True, auth_token=token)
            self.gateway = JavaGateway(gateway_parameters=parameters, java_process=self.process)
        except Exception as exc:
            self.dead = f"could not start the Java process: {type(exc).__name__}: {exc}"
            log.error("sciworld: %s", self.dead)
            if self.process is not None:
                self.process.kill()
            return
        log.info("sciworld: started Java process %d", self.process.pid)

    async def call(self, work: Callable[[], T]) -> T:
        """Run `work` on this JVM's thread; JavaCrashed if the JVM is or goes dead, or hangs (one
        call running longer than call_timeout_s; time spent queued behind other calls does not count)."""
        if self.dead:
            raise JavaCrashed(self.dead)

        def guarded() -> T:
            if self.dead:  # the launch failed, or the JVM was killed while this call waited its turn
                raise JavaCrashed(self.dead)
            self._busy_since = time.monotonic()
            try:
                return work()
            finally:
                self._busy_since = None

        try:
            future = asyncio.wrap_future(self._thread.submit(guarded))
        except RuntimeError:  # the thread was shut down by a kill in another thread
            raise JavaCrashed(self.dead or "the Java process stopped") from None
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=_WATCH_INTERVAL_S)
                if done:
                    return future.result()
                busy_since = self._busy_since
                if busy_since is not None and time.monotonic() - busy_since > self.call_timeout_s:
                    log.warning("sciworld: Java process %s hung", self.pid)
                    self.kill(f"the Java process gave no answer within {self.call_timeout_s:g} s and was killed")
                    future.add_done_callback(lambda f: f.cancelled() or f.exception())  # its error is expected
                    raise JavaCrashed(self.dead)
        except JavaCrashed:
            raise
        except Exception as exc:
            if self.dead:
                raise JavaCrashed(self.dead) from exc
            if isinstance(exc, Py4JJavaError) or not isinstance(exc, Py4JError):
                raise  # the simulator threw: that session's problem, the JVM is fine
            # The connection to the JVM broke: it died (its exit may take a moment to show) or is unusable.
            code = await asyncio.to_thread(self._exit_code, 2.0)
            log.warning("sciworld: Java process %s lost (exit code %s): %s", self.pid, code, exc)
            self.kill(f"the Java process died (exit code {code})" if code is not None else f"lost the Java process: {exc}")
            raise JavaCrashed(self.dead) from exc

    def _exit_code(self, wait_s: float) -> int | None:
        try:
            return self.process.wait(timeout=wait_s) if self.process is not None else None
        except subprocess.TimeoutExpired:
            return None

    def detach(self, interface: Any) -> None:
        """Let the JVM collect a simulator's objects (py4j holds a reference per proxy until told)."""
        if self.dead:
            return
        try:
            self._thread.submit(lambda: self.gateway.detach(interface))
        except RuntimeError:
            pass  # killed meanwhile: the JVM and its objects are gone anyway

    async def heap_used_bytes(self) -> int:
        """The JVM's live heap after a full garbage collection (what its simulators hold)."""

        def work() -> int:
            self.gateway.jvm.System.gc()
            runtime = self.gateway.jvm.Runtime.getRuntime()
            return runtime.totalMemory() - runtime.freeMemory()

        return await self.call(work)

    def kill(self, reason: str) -> None:
        """Stop serving: later calls raise JavaCrashed(reason). Safe to call twice."""
        if self.dead:
            return
        self.dead = reason
        log.info("sciworld: Java process %s stopped: %s", self.pid, reason)
        if self.gateway is not None:
            # Otherwise py4j tries to tell the dead JVM about every proxy Python collects, and logs errors.
            self.gateway._gateway_client.is_connected = False
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # also unblocks a call stuck waiting for the JVM's answer
        self._thread.submit(self._close_gateway)
        self._thread.shutdown(wait=False)

    def _close_gateway(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()  # it was still starting when killed
            self.process.wait()
        if self.gateway is not None:
            self.gateway.close(keep_callback_server=False, close_callback_server_connections=False)


@dataclass(frozen=True, slots=True)
class SimulatorStep:
    observation: str
    score: int  # ScienceWorld's score, 0-100; negative when the task failed
    completed: bool


class Simulator:
    """One ScienceWorld simulator (a `PythonInterface`) inside a shared JVM; async calls."""

    def __init__(self, process: JavaProcess, interface: Any) -> None:
        self.process = process
        self._interface = interface

    @property
    def alive(self) -> bool:
        return not self.process.dead

    async def load(self, task_name: str, variation: int, gold_path: bool = False) -> tuple[str, str]:
        """Load a task; (task description, what `look around` shows), as one call so no other
        session's call runs in between."""

        def work() -> tuple[str, str]:
            self._interface.load(task_name, variation, "", gold_path)
            return self._interface.getTaskDescription(), self._interface.step("look around")

        return await self.process.call(work)

    async def step(self, command: str) -> SimulatorStep:
        def work() -> SimulatorStep:
            observation = self._interface.step(command)
            score = int(round(100 * self._interface.getScore()))
            return SimulatorStep(observation, score, bool(self._interface.getCompleted()))

        return await self.process.call(work)

    async def gold_actions(self) -> list[str]:
        """The gold action sequence of the task loaded with gold_path=True."""
        return await self.process.call(lambda: list(self._interface.getGoldActionSequence()))

    async def variation_counts(self, task_name: str) -> tuple[int, int, int]:
        """ScienceWorld's (train, dev, test) variation counts of a task (loads variation 0)."""

        def work() -> tuple[int, int, int]:
            self._interface.load(task_name, 0, "", False)
            counts = (self._interface.getVariationsTrain(), self._interface.getVariationsDev(), self._interface.getVariationsTest())
            return tuple(len(list(c)) for c in counts)  # type: ignore[return-value]

        return await self.process.call(work)


class JavaPool:
    """Hands out simulators, spreading them over JVMs; replaces dead JVMs as sessions need them."""

    def __init__(self, processes: int, sessions_per_process: int, heap_mb: int, call_timeout_s: float) -> None:
        if processes < 1 or sessions_per_process < 1:
            raise ValueError("a ScienceWorld pool needs at least one process and one session per process")
        self.processes = processes
        self.sessions_per_process = sessions_per_process
        self.heap_mb = heap_mb
        self.call_timeout_s = call_timeout_s
        self.live: list[JavaProcess] = []
        self._lock = threading.Lock()  # sessions of servers in other threads may share the pool

    def _place(self) -> JavaProcess:
        with self._lock:
            self.live = [p for p in self.live if not p.dead]
            roomy = [p for p in self.live if p.sessions < self.sessions_per_process]
            if len(self.live) < self.processes or not roomy:
                chosen = JavaProcess(self.heap_mb, self.call_timeout_s)
                self.live.append(chosen)
            else:
                chosen = min(roomy, key=lambda p: p.sessions)
            chosen.sessions += 1
            return chosen

    async def acquire(self) -> Simulator:
        process = self._place()
        try:
            interface = await process.call(lambda: process.gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface())
        except BaseException:
            self._unplace(process)
            raise
        return Simulator(process, interface)

    def release(self, simulator: Simulator) -> None:
        """Give a simulator back; its world becomes garbage in the JVM. A JVM left empty beyond
        the pool's base count is stopped."""
        simulator.process.detach(simulator._interface)
        self._unplace(simulator.process)

    def _unplace(self, process: JavaProcess) -> None:
        with self._lock:
            process.sessions -= 1
            if process.dead or process.sessions or len(self.live) <= self.processes:
                return
            self.live.remove(process)
        process.kill("stopped: no sessions left on a JVM beyond the pool's base count")

    def shutdown(self) -> None:
        with self._lock:
            processes, self.live = self.live, []
        for process in processes:
            process.kill("the pool shut down")
