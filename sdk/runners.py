"""Where an environment's code runs: on the event loop, in a thread pool, or in its own process.

The server talks to every session through an `EnvRunner` with three coroutines (reset, step,
close), so the transport never knows how the environment is isolated. Two properties tell the server
what it may do besides: `steps_at_once` (step never waits: the server may call `step_now`, a plain
call, in place, with no task or coroutine: the fast path of inline environments) and `interrupt()`
(stop a call in progress now, for a session destroyed mid-step).

- `InlineRunner`: async environments, and sync ones that declare `inline = True` (microsecond
  steps: a thread hop would cost more than the step).
- `ThreadRunner`: sync environments by default. The loop stays free while they compute. A class
  mixing `def` and `async def` methods has its coroutines run on the loop.
- `ProcessRunner`: one child process per session, for environments that can crash, leak or hold
  the GIL. The child rebuilds the environment from its `EnvSpec`, configuration included. A dead
  child becomes EnvCrashed for that session alone; close kills it for sure.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import multiprocessing.connection
import traceback
from concurrent.futures import Executor
from typing import Any

from .env_spec import EnvSpec
from .environment import Environment, ObservationLike, StepOutcome, Task, TaskError


class EnvCrashed(Exception):
    """The environment raised or its process died; the message says which."""


class EnvRunner:
    # True when `step` finishes without ever waiting (a sync environment run on the event loop).
    steps_at_once = False

    async def reset(self, task: Task) -> ObservationLike:
        raise NotImplementedError

    async def step(self, action: str) -> StepOutcome:
        raise NotImplementedError

    def step_now(self, action: str) -> StepOutcome:
        """The step of a runner that `steps_at_once`, as a plain call."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def interrupt(self) -> bool:
        """Stop a call in progress at once, if this runner can (the runner is then closed)."""
        return False


def runner_for(env: EnvSpec | type[Environment], isolation: str, executor: Executor) -> EnvRunner:
    """The runner of a new session of `env` ("thread" or "process" isolation; see the module doc)."""
    spec = EnvSpec.coerce(env)
    if isolation == "process":
        return ProcessRunner(spec, executor)
    cls = spec.env_class
    if cls.is_async() or cls.inline:
        return InlineRunner(spec.make())
    return ThreadRunner(spec.make(), executor)


def env_crashed(exc: BaseException) -> EnvCrashed:
    """The EnvCrashed an exception raised by environment code becomes (type and message kept; the
    exception is its cause, so the server's log shows the environment's traceback)."""
    crashed = EnvCrashed(f"{type(exc).__name__}: {exc}")
    crashed.__cause__ = exc
    return crashed


class InlineRunner(EnvRunner):
    def __init__(self, env: Environment) -> None:
        self.env = env
        self.steps_at_once = not inspect.iscoroutinefunction(env.step)

    async def _call(self, method: Any, *args: Any) -> Any:
        try:
            result = method(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        except TaskError:
            raise
        except Exception as exc:
            raise env_crashed(exc) from exc

    async def reset(self, task: Task) -> ObservationLike:
        return await self._call(self.env.reset, task)

    async def step(self, action: str) -> StepOutcome:
        # Async environments, and sync inline ones whose step must wait its turn (a deadline, a
        # queued request): the environment's call (and its coroutine) in this frame, no second
        # coroutine per step.
        try:
            result = self.env.step(action)
            if not self.steps_at_once:
                result = await result
            return result  # type: ignore[no-any-return]
        except TaskError:
            raise
        except Exception as exc:
            raise env_crashed(exc) from exc

    def step_now(self, action: str) -> StepOutcome:
        try:
            return self.env.step(action)  # type: ignore[no-any-return]
        except TaskError:
            raise
        except Exception as exc:
            raise env_crashed(exc) from exc

    async def close(self) -> None:
        await self._call(self.env.close)


class ThreadRunner(InlineRunner):
    def __init__(self, env: Environment, executor: Executor) -> None:
        super().__init__(env)
        self.executor = executor
        self.steps_at_once = False

    async def step(self, action: str) -> StepOutcome:
        return await self._call(self.env.step, action)  # type: ignore[no-any-return]

    async def _call(self, method: Any, *args: Any) -> Any:
        if inspect.iscoroutinefunction(method):  # an `async def` among `def` methods: on the loop
            return await super()._call(method, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, method, *args)
        except TaskError:
            raise
        except Exception as exc:
            raise env_crashed(exc) from exc


def _child_main(conn: multiprocessing.connection.Connection, spec: EnvSpec) -> None:
    """The child's loop: one request in, one reply out, until close or the pipe ends. Coroutines
    run on one event loop for the child's life: what an async environment keeps between calls (an
    HTTP client, a browser connection) belongs to the loop that made it."""
    env = spec.make()
    loop = asyncio.new_event_loop()
    while True:
        try:
            op, arg = conn.recv()
        except EOFError:
            return
        try:
            result = getattr(env, op)(arg) if op != "close" else env.close()
            if asyncio.iscoroutine(result):
                result = loop.run_until_complete(result)
            conn.send(("ok", result))
        except TaskError as exc:
            conn.send(("task_error", str(exc)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"))
        if op == "close":
            return


class ProcessRunner(EnvRunner):
    _context: Any = None

    def __init__(self, env: EnvSpec | type[Environment], executor: Executor) -> None:
        spec = EnvSpec.coerce(env)
        if ProcessRunner._context is None:
            # forkserver: children fork from a clean, pre-imported server, cheap and thread-safe.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["gymwire.sdk.environment", spec.entry_point.partition(":")[0]])
            ProcessRunner._context = ctx
        self.executor = executor
        self.parent, child = ProcessRunner._context.Pipe()
        self.process = ProcessRunner._context.Process(target=_child_main, args=(child, spec), daemon=True)
        self.process.start()
        child.close()

    def _roundtrip(self, op: str, arg: Any) -> Any:
        self.parent.send((op, arg))
        return self.parent.recv()

    async def _call(self, op: str, arg: Any = None) -> Any:
        loop = asyncio.get_running_loop()
        try:
            status, value = await loop.run_in_executor(self.executor, self._roundtrip, op, arg)
        except (EOFError, OSError) as exc:
            await loop.run_in_executor(self.executor, self.process.join, 1.0)  # reap it to read the exit code
            code = self.process.exitcode
            raise EnvCrashed(f"environment process died (exit code {code})") from exc
        if status == "task_error":
            raise TaskError(value)
        if status == "error":
            raise EnvCrashed(value)
        return value

    async def reset(self, task: Task) -> ObservationLike:
        return await self._call("reset", task)

    async def step(self, action: str) -> StepOutcome:
        return await self._call("step", action)

    async def close(self) -> None:
        try:
            if self.process.is_alive():
                await asyncio.wait_for(self._call("close"), timeout=2.0)
        except (EnvCrashed, asyncio.TimeoutError):
            pass
        finally:
            self.kill()  # also when the call could not even be made (executor shut down by stop)

    def interrupt(self) -> bool:
        self.kill()  # a stuck child must not hold the session's resources
        return True

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.parent.close()
        self.process.close()
