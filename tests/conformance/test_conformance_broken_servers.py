"""Each deliberately broken server fails the suite, and the report names the broken requirements."""

import pytest
from broken_servers import (
    SLOW_ACTION,
    SLOW_MS,
    AnyTokenServer,
    BytesKeyServer,
    ControlIdReuseServer,
    CrashOnBadFrameServer,
    DeadlineIgnoringServer,
    DoubleStepServer,
    InlineSleepyEnv,
    LockstepServer,
    NoDrainServer,
    SeqEchoServer,
    SleepyEnv,
    break_error_table,
)
from conformance_servers import FAST_LIMITS, serve

from gymwire.sdk.conformance import run_conformance
from gymwire.sdk.server import GymServer

TOKEN = "conformance-test-token"
# Checks every broken server still passes: each break is specific, not a server that fails everything.
CONTROLS = {"handshake-msgpack", "episode-json", "batch", "cancel-unknown"}

# server class -> (checks that must fail, requirement ids the report must name as broken)
BROKEN = {
    LockstepServer: ({"slow-request-concurrency"}, {"GW-REQUEST-4", "GW-HEARTBEAT-1"}),
    CrashOnBadFrameServer: ({"malformed-frames-msgpack", "malformed-frames-json", "schema-violations"}, {"GW-FRAME-3", "GW-ERROR-6"}),
    DoubleStepServer: ({"replay-last-seq", "resume-after-drop"}, {"GW-SESSION-5", "GW-RESUME-4"}),
    DeadlineIgnoringServer: ({"deadline", "batch-deadline"}, {"GW-DEADLINE-1", "GW-DEADLINE-4"}),
    AnyTokenServer: ({"auth"}, {"GW-AUTH-1"}),
    ControlIdReuseServer: ({"duplicate-id"}, {"GW-REQUEST-5"}),
    BytesKeyServer: ({"malformed-frames-msgpack"}, {"GW-FRAME-7"}),
    SeqEchoServer: ({"bad-sequence"}, {"GW-ERROR-8"}),
}


async def _run(server_class, **options):
    with serve([SleepyEnv], server_class, token=TOKEN) as url:
        return await run_conformance(url, token=TOKEN, slow_action=SLOW_ACTION, slow_ms=SLOW_MS, max_wait=5, **options)


@pytest.mark.parametrize("server_class", list(BROKEN), ids=lambda c: c.__name__)
async def test_broken_server_fails_with_the_right_ids(server_class):
    must_fail, broken_ids = BROKEN[server_class]
    report = await _run(server_class, checks=must_fail | CONTROLS)
    assert not report.ok
    failed = {r.name for r in report.failures}
    assert failed == must_fail, report.summary()
    failing_ids = {i for r in report.failures for i in r.failed_requirements}
    assert broken_ids <= failing_ids, report.summary()
    for requirement in broken_ids:
        entry = report.requirements()[requirement]
        assert entry["status"] == "fail"
        assert entry["evidence"][0]["wire"], "a failure must show what was sent and received"
    # The summary names the failing ids for a human reader.
    assert all(requirement in report.summary() for requirement in broken_ids)


# The step-path breaks again, with an environment on the loop whose steps run in place, not as tasks.
# (After the drop, the double step shows at the re-sent seq itself: GW-SESSION-5 in both checks.)
BROKEN_IN_PLACE = {
    DoubleStepServer: ({"replay-last-seq", "resume-after-drop"}, {"GW-SESSION-5"}),
    SeqEchoServer: ({"bad-sequence"}, {"GW-ERROR-8"}),
}


@pytest.mark.parametrize("server_class", list(BROKEN_IN_PLACE), ids=lambda c: c.__name__)
async def test_a_broken_step_path_fails_when_steps_run_in_place(server_class):
    must_fail, broken_ids = BROKEN_IN_PLACE[server_class]
    with serve([InlineSleepyEnv], server_class, token=TOKEN) as url:
        report = await run_conformance(url, token=TOKEN, slow_action=SLOW_ACTION, slow_ms=SLOW_MS, max_wait=5,
                                       checks=must_fail | CONTROLS)
    assert {r.name for r in report.failures} == must_fail, report.summary()
    assert broken_ids <= {i for r in report.failures for i in r.failed_requirements}, report.summary()


# (error name, wrong entry) -> the check that provokes that error
WRONG_TABLES = {
    ("INVALID_TASK", "retryable"): ({"retryable": True}, "invalid-task"),
    ("UNKNOWN_ENV", "number"): ({"code": 17}, "unknown-env"),
}


@pytest.mark.parametrize("wrong_entry", list(WRONG_TABLES), ids="-".join)
async def test_a_server_with_a_wrong_error_table_fails_error_shape(monkeypatch, wrong_entry):
    change, provoking_check = WRONG_TABLES[wrong_entry]
    break_error_table(monkeypatch, wrong_entry[0], **change)
    report = await _run(GymServer, checks={provoking_check} | CONTROLS)
    assert {r.name for r in report.failures} == {provoking_check}, report.summary()
    assert "GW-ERROR-1" in report.failures[0].failed_requirements, report.summary()
    assert wrong_entry[0] in report.failures[0].message


async def test_expected_failures_do_not_fail_the_run():
    must_fail, broken_ids = BROKEN[DeadlineIgnoringServer]
    report = await _run(DeadlineIgnoringServer, checks=must_fail | {"episode-msgpack"}, expected_failures=broken_ids | {"GW-DEADLINE-2"})
    assert report.ok, report.summary()
    assert {r.name: r.status for r in report.results} == {"deadline": "xfail", "batch-deadline": "xfail", "episode-msgpack": "pass"}
    assert report.requirements()["GW-DEADLINE-1"]["status"] == "xfail"


async def test_a_server_that_stops_without_draining_fails_the_drain_check():
    server = NoDrainServer([SleepyEnv], port=0, limits=FAST_LIMITS)
    async with server:
        report = await run_conformance(
            server.url, slow_action=SLOW_ACTION, slow_ms=SLOW_MS, checks={"episode-json", "drain"},
            shutdown=lambda: server.stop(drain_timeout=30),
        )
    assert [r.name for r in report.failures] == ["drain"], report.summary()
    assert "GW-DRAIN-1" in report.failures[0].failed_requirements
