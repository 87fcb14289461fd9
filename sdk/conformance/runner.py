"""Run the checks against a server and build the report."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from . import checks_core, checks_full  # noqa: F401  (importing registers the checks)
from .framework import CHECKS, DEFAULT_PROBE_ACTION, LEVELS, Check, CheckFailed, CheckResult, ConformanceOptions, Context, Skipped
from websockets.exceptions import InvalidStatus

from .wire import ConnectionLost, NoAnswer, RawConnection, Transcript

# MUST requirements of spec/requirements.json that no check covers, and why. A test keeps this
# table and the checks together covering every MUST of the spec.
NOT_CHECKED: dict[str, str] = {
    "GW-VERSION-1": "binds clients (what they offer); a server suite cannot observe it",
    "GW-HANDSHAKE-1": "binds clients (send hello first); the server side is GW-HANDSHAKE-2",
    "GW-HANDSHAKE-5": "binds clients (use only announced features)",
    "GW-REQUEST-3": "binds clients (match answers by id, accept any order)",
    "GW-STEP-7": "which actions a game cannot use depends on the environment; every check steps with "
                 "arbitrary text and would fail on a protocol error, which is as far as a generic suite can go",
    "GW-HEARTBEAT-4": "binds clients (answer server pings)",
    "GW-LIMIT-6": "binds clients (stay within the announced limits)",
    "GW-LIMIT-8": "binds clients (fail the call an oversized answer was for)",
    "GW-ERROR-7": "binds receivers of errors, i.e. clients",
    "GW-DRAIN-6": "whether a request reaches the server before or after it decides to say goodbye cannot be arranged from outside",
    "GW-DRAIN-7": "binds clients (fail what is pending at goodbye)",
    "GW-AUTH-2": "constant-time comparison cannot be measured reliably over a network; review the code",
    "GW-AUTH-3": "logs are invisible from outside; the checks only see that errors do not echo tokens",
    "GW-AUTH-4": "randomness cannot be proven from samples",
}

STATUS_ORDER = ("fail", "xfail", "pass", "skip")


class ConformanceSetupError(Exception):
    """The suite could not start: the server is unreachable, refuses the hello, or lacks the environment."""


@dataclass
class ConformanceReport:
    url: str
    level: str
    env: str | None
    welcome: dict[str, Any]
    results: list[CheckResult]
    options: dict[str, Any] = field(default_factory=dict)
    encodings: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check failed unexpectedly."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.results) for status in STATUS_ORDER}

    def requirements(self) -> dict[str, dict[str, Any]]:
        """requirement id -> its result (fail if any check found it broken, pass if a covering
        check passed, else skip) and the evidence: which checks, and what failed."""
        table: dict[str, dict[str, Any]] = {}
        for result in self.results:
            for requirement in dict.fromkeys(result.requirements + result.failed_requirements):
                entry = table.setdefault(requirement, {"status": "skip", "checks": {}})
                entry["checks"][result.name] = result.status
                broken = requirement in result.failed_requirements
                if broken and result.status in ("fail", "xfail"):
                    entry["status"] = "fail" if result.status == "fail" or entry["status"] == "fail" else "xfail"
                    entry.setdefault("evidence", []).append({"check": result.name, "message": result.message, "wire": result.evidence})
                elif result.status == "pass" and entry["status"] == "skip":
                    entry["status"] = "pass"
        for requirement, reason in NOT_CHECKED.items():
            table.setdefault(requirement, {"status": "not-checked", "reason": reason})
        return dict(sorted(table.items(), key=lambda item: _requirement_key(item[0])))

    def summary(self) -> str:
        server = self.welcome.get("server") or {}
        counts = self.counts()
        lines = [
            f"gymwire conformance: {self.url} ({server.get('name', '?')} {server.get('version', '?')}, "
            f"protocol {self.welcome.get('version', '?')}), env {self.env!r}, level {self.level}",
            f"capabilities: {', '.join(self.welcome.get('capabilities') or []) or 'none'}; "
            f"encodings: {', '.join(self.encodings)}",
            "",
        ]
        areas: dict[str, list[CheckResult]] = {}
        for result in self.results:
            areas.setdefault(result.area, []).append(result)
        for area, results in areas.items():
            tally = ", ".join(f"{sum(r.status == s for r in results)} {s}" for s in STATUS_ORDER if any(r.status == s for r in results))
            lines.append(f"{area:<10} {tally}")
            for result in results:
                if result.status == "pass" and not result.unexpected_pass:
                    continue
                mark = {"fail": "FAIL", "xfail": "XFAIL", "skip": "skip", "pass": "PASS"}[result.status]
                ids = ", ".join(result.failed_requirements or result.requirements)
                note = " (listed as expected to fail, but passed)" if result.unexpected_pass else ""
                lines.append(f"  {mark:<5} {result.name} [{ids}]{note}")
                if result.message:
                    lines.append(f"        {result.message}")
                if result.status in ("fail", "xfail") and result.evidence:
                    lines.append("        wire (last frames):")
                    lines.extend(f"          {entry}" for entry in result.evidence[-8:])
        lines.append("")
        failed_ids = sorted({i for r in self.failures for i in r.failed_requirements}, key=_requirement_key)
        lines.append(
            f"{counts['pass']} passed, {counts['fail']} failed, {counts['xfail']} expected failures, "
            f"{counts['skip']} skipped in {self.seconds:.1f}s"
        )
        if failed_ids:
            lines.append(f"failing requirements: {', '.join(failed_ids)}")
        lines.append("CONFORMANT at this level" if self.ok else "NOT CONFORMANT")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "level": self.level,
            "env": self.env,
            "ok": self.ok,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "server": self.welcome.get("server"),
            "version": self.welcome.get("version"),
            "capabilities": self.welcome.get("capabilities"),
            "encodings": list(self.encodings),
            "limits": self.welcome.get("limits"),
            "options": self.options,
            "requirements": self.requirements(),
            "checks": [r.to_json() for r in self.results],
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")


def _requirement_key(requirement: str) -> tuple[str, int]:
    area, _, number = requirement.removeprefix("GW-").rpartition("-")
    return (area, int(number) if number.isdigit() else 0)


def read_expected_failures(path: str | Path) -> frozenset[str]:
    """One requirement id or check name per line; `#` starts a comment."""
    names = set()
    for line in Path(path).read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.add(name)
    return frozenset(names)


def select_checks(level: str, names: Iterable[str] | None = None) -> list[Check]:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    allowed = LEVELS[: LEVELS.index(level) + 1]
    chosen = [c for c in CHECKS if c.level in allowed]
    if names is not None:
        wanted = set(names)
        unknown = wanted - {c.name for c in CHECKS}
        if unknown:
            raise ValueError(f"unknown check name(s) {sorted(unknown)}; known: {sorted(c.name for c in CHECKS)}")
        chosen = [c for c in chosen if c.name in wanted]
    return chosen


async def _encodings(url: str, options: ConformanceOptions, transcript: Transcript) -> tuple[str, ...]:
    """The encodings whose subprotocol the server accepts (a server need not speak both)."""
    spoken = []
    for encoding in ("msgpack", "json"):
        try:
            conn = await RawConnection.open(url, encoding=encoding, label="discover", transcript=transcript, timeout=options.reply_timeout)
        except InvalidStatus:
            continue
        except Exception as exc:  # unreachable host, TLS trouble, a broken upgrade: all stop the run
            raise ConformanceSetupError(
                f"cannot open a gymwire.v1+{encoding} WebSocket to {url}: {exc}; is the server running at that address?"
            ) from None
        spoken.append(encoding)
        await conn.close()
    if not spoken:
        raise ConformanceSetupError(f"{url} refused the WebSocket upgrade for both gymwire.v1+msgpack and gymwire.v1+json")
    return tuple(spoken)


async def _discover(url: str, options: ConformanceOptions) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """Handshake once to learn the encodings, capabilities, limits and the environment to test."""
    transcript = Transcript()
    encodings = await _encodings(url, options, transcript)
    probe = Context(url, options, welcome={}, env_info={"name": options.env or "?"}, transcript=transcript, encodings=encodings)
    conn = await probe.connect(handshake=False, label="discover")
    try:
        welcome = await probe.request(conn, probe.hello())
        if welcome.get("type") != "welcome":
            hint = ""
            if welcome.get("name") == "UNAUTHORIZED":
                hint = " (the --token given is not the server's)" if options.token else " (pass the server's --token)"
            raise ConformanceSetupError(f"the server answered hello with {welcome.get('name', welcome.get('type'))}: "
                                        f"{welcome.get('message', '')}{hint}")
        envs = welcome.get("envs") or []
        env = options.env or (envs[0] if envs else None)
        if env is None or env not in envs:
            raise ConformanceSetupError(f"the server hosts no environment {env!r}; it hosts {envs}")
        described = await probe.request(conn, {"type": "describe_env", "env": env})
        if described.get("type") != "env_description" or not isinstance(described.get("env"), dict):
            raise ConformanceSetupError(f"describe_env {env!r} was answered with {described!r:.300}")
        probe.env_info = described["env"]
        await _check_probe_action(probe, conn)
        return welcome, described["env"], encodings
    except (NoAnswer, ConnectionLost) as exc:
        raise ConformanceSetupError(f"the handshake with {url} failed: {exc}") from None
    finally:
        await probe.close()


async def _check_probe_action(probe: Context, conn: RawConnection) -> None:
    """The checks play the probe action and expect it not to end the episode by itself."""
    opened = await probe.request(conn, probe.open_message(max_turns=5))
    if opened.get("type") != "opened":
        return  # the checks report what is wrong with open, under their requirement ids
    result = await probe.step(conn, opened["session"], 1)
    await probe.request(conn, {"type": "close", "session": opened["session"]})
    if result.get("type") == "step_result" and result.get("terminated"):
        raise ConformanceSetupError(
            f"the action {probe.probe!r} ends an episode of {probe.env!r} at once; the checks need an action that "
            "does not: pass one with --action"
        )


async def _run_one(
    check: Check, url: str, options: ConformanceOptions, welcome: dict[str, Any], env_info: dict[str, Any], encodings: tuple[str, ...]
) -> CheckResult:
    result = CheckResult(check.name, check.area, check.level, check.requirements, status="pass")
    missing = [c for c in check.needs if c not in (welcome.get("capabilities") or [])]
    if missing:
        result.status = "skip"
        result.message = f"the server does not announce {', '.join(missing)}"
        return result
    ctx = Context(url, options, welcome, env_info, encodings=encodings)
    started = time.monotonic()
    budget = 6 * options.reply_timeout + options.max_wait + 3 * options.slow_ms / 1000
    try:
        await asyncio.wait_for(check.func(ctx), budget)
        broken = ctx.violations()
        if broken:
            raise CheckFailed(tuple(dict.fromkeys(i for v in broken for i in v.requirements)), "; ".join(v.message for v in broken[:3]))
    except Skipped as exc:
        result.status, result.message = "skip", str(exc)
    except CheckFailed as exc:
        result.status, result.message, result.failed_requirements = "fail", exc.message, exc.requirements
    except NoAnswer as exc:
        result.status, result.message, result.failed_requirements = "fail", f"request not answered: {exc}", ("GW-REQUEST-2",)
    except ConnectionLost as exc:
        result.status, result.message, result.failed_requirements = "fail", f"the server dropped the connection: {exc}", ("GW-ERROR-6",)
    except asyncio.TimeoutError:
        result.status, result.message, result.failed_requirements = "fail", f"the check did not finish within {budget:.0f}s", ("GW-REQUEST-2",)
    except OSError as exc:
        result.status, result.message, result.failed_requirements = "fail", f"the server became unreachable: {exc}", ("GW-ERROR-6",)
    except Exception as exc:  # an answer the check could not even read: report it, go on with the next check
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result.status = "fail"
        result.message = f"unreadable answer ({type(exc).__name__}: {exc}) at {Path(where.filename).name}:{where.lineno}"
    finally:
        await ctx.close()
    result.seconds = time.monotonic() - started
    if result.status == "fail":
        result.evidence = ctx.transcript.entries[-40:]
    return result


def _apply_expected(result: CheckResult, expected: frozenset[str]) -> CheckResult:
    listed = result.name in expected or (result.failed_requirements and set(result.failed_requirements) <= expected)
    if result.status == "fail" and listed:
        return replace(result, status="xfail")
    if result.status == "pass" and result.name in expected:
        return replace(result, unexpected_pass=True)
    return result


async def run_conformance(
    url: str,
    *,
    token: str | None = None,
    env: str | None = None,
    action: str = DEFAULT_PROBE_ACTION,
    options: dict[str, Any] | None = None,
    level: str = "full",
    max_wait: float = 10.0,
    reply_timeout: float = 5.0,
    slow_action: str | None = None,
    slow_ms: int = 500,
    crash_action: str | None = None,
    expected_failures: Iterable[str] = (),
    checks: Iterable[str] | None = None,
    shutdown: Callable[[], Awaitable[Any]] | None = None,
) -> ConformanceReport:
    """Check the gymwire server at `url` against spec/PROTOCOL.md and return the report.

    `env` is the environment to drive (default: the first the server lists) and `action` the text
    the checks play, which must not end an episode by itself; `options` go into every open (for
    environments that need some, or that send images only when asked); `level` "core" or
    "full"; `max_wait` bounds the checks that wait for server timers; `slow_action`/`slow_ms` and
    `crash_action` unlock the checks that need a slow or a crashing step of `env`;
    `expected_failures` lists requirement ids or check names that may fail without failing the run;
    `checks` restricts the run to those check names; `shutdown`, a coroutine function that starts
    the server's graceful shutdown, enables the drain check, which runs last. Raises
    ConformanceSetupError when the server cannot be reached or refuses the hello.
    """
    settings = ConformanceOptions(
        token=token, env=env, probe_action=action, open_options=dict(options or {}), level=level, max_wait=max_wait,
        reply_timeout=reply_timeout, slow_action=slow_action, slow_ms=slow_ms, crash_action=crash_action,
        expected_failures=frozenset(expected_failures), checks=frozenset(checks) if checks is not None else None,
        shutdown=shutdown,
    )
    selected = sorted(select_checks(level, settings.checks), key=lambda c: c.final)  # stable: registry order otherwise
    started = time.monotonic()
    welcome, env_info, encodings = await _discover(url, settings)
    results = []
    for check in selected:
        result = await _run_one(check, url, settings, welcome, env_info, encodings)
        results.append(_apply_expected(result, settings.expected_failures))
    return ConformanceReport(
        url=url,
        level=level,
        env=env_info.get("name"),
        welcome=welcome,
        results=results,
        encodings=encodings,
        options={
            "action": action, "options": settings.open_options, "slow_action": slow_action, "slow_ms": slow_ms,
            "crash_action": crash_action, "max_wait": max_wait, "token": "<redacted>" if token else None,
            "expected_failures": sorted(settings.expected_failures),
        },
        seconds=time.monotonic() - started,
    )
