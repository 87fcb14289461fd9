"""The suite passes against gymwire's own server: every built-in environment, and a test
environment whose slow and crashing actions unlock every check."""

import pytest
from broken_servers import CRASH_ACTION, FINISH_ACTION, SLOW_ACTION, SLOW_MS, JsonOnlyServer, SleepyEnv
from conformance_servers import serve

from gymwire.sdk.conformance import QUICK_LIMITS, ConformanceSetupError, check_environment, run_conformance
from gymwire.sdk.server import Limits
from gymwire.sdk.registry import builtin_envs, resolve_env

TOKEN = "conformance-test-token"


# Environments that send images only when an open asks for them.
OPEN_OPTIONS = {"babyai": {"images": True}, "miniwob": {"images": True}}
# ScienceWorld's first session waits for a Java process to start and load the simulator.
REPLY_TIMEOUT = {"sciworld": 60}


# The heartbeat checks run in the next test; here a slow heartbeat keeps a loaded machine (a browser
# starting for an open) from reaping the suite's connection as half-open between its pongs.
BUILTIN_LIMITS = Limits(**{**QUICK_LIMITS, "heartbeat_interval_ms": 10_000})


@pytest.mark.parametrize("name", sorted(builtin_envs()))
async def test_builtin_env_conforms(name):
    with serve([resolve_env(name)], limits=BUILTIN_LIMITS) as url:
        # max_wait=1 skips the checks that only wait for server timers (heartbeat, resume grace): they
        # do not depend on the environment and run once, in the next test.
        report = await run_conformance(url, env=name, options=OPEN_OPTIONS.get(name), max_wait=1, reply_timeout=REPLY_TIMEOUT.get(name, 10))
    assert report.ok, report.summary()
    statuses = {r.name: r.status for r in report.results}
    assert statuses["episode-msgpack"] == statuses["episode-json"] == "pass", report.summary()
    assert statuses["resume-after-drop"] == statuses["cancel-in-flight"] == "pass", report.summary()
    if resolve_env(name).info().images:
        assert statuses["images"] == "pass", report.summary()


async def test_every_check_runs_with_slow_and_crash_actions():
    # check_environment serves the class in this test's own event loop, as an env author would.
    report = await check_environment(
        SleepyEnv, token=TOKEN, slow_action=SLOW_ACTION, slow_ms=SLOW_MS, crash_action=CRASH_ACTION, max_wait=5, reply_timeout=10
    )
    assert report.ok, report.summary()
    skipped = {r.name: r.message for r in report.results if r.status == "skip"}
    # SleepyEnv has no images; everything else must have run.
    assert set(skipped) == {"images", "auth-not-required"}, skipped
    requirements = report.requirements()
    assert requirements["GW-DEADLINE-1"]["status"] == "pass"
    assert requirements["GW-REQUEST-4"]["status"] == "pass"
    assert requirements["GW-DRAIN-2"]["status"] == "pass"  # check_environment can stop its server: drain runs last
    assert report.results[-1].name == "drain"
    assert requirements["GW-AUTH-2"]["status"] == "not-checked"


async def test_core_level_runs_only_core_checks():
    with serve([SleepyEnv]) as url:
        report = await run_conformance(url, level="core")
    assert report.ok, report.summary()
    assert {r.level for r in report.results} == {"core"}
    assert "batch" not in {r.name for r in report.results}


async def test_an_action_that_ends_episodes_is_refused_up_front():
    with serve([SleepyEnv]) as url:
        with pytest.raises(ConformanceSetupError, match="--action"):
            await run_conformance(url, action=FINISH_ACTION)
        report = await run_conformance(url, action="look around", checks={"episode-msgpack"})
    assert report.ok, report.summary()


async def test_a_server_speaking_only_json_conforms_and_msgpack_checks_skip():
    with serve([SleepyEnv], JsonOnlyServer) as url:
        report = await run_conformance(url, level="core")
    assert report.ok, report.summary()
    assert report.encodings == ("json",)
    statuses = {r.name: r.status for r in report.results}
    assert statuses["handshake-msgpack"] == statuses["episode-msgpack"] == statuses["malformed-frames-msgpack"] == "skip"
    # The other checks play over the encoding the server speaks.
    assert statuses["handshake-json"] == statuses["episode-json"] == statuses["schema-violations"] == "pass"
