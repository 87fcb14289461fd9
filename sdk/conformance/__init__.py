"""The gymwire conformance suite: checks a server against spec/PROTOCOL.md over the wire.

From the command line: `gymwire conformance ws://host:port [--env NAME] [--level core|full]`.
From Python or pytest::

    from gymwire.sdk.conformance import run_conformance

    async def test_my_server_conforms(my_server_url):
        report = await run_conformance(my_server_url, env="myenv")
        assert report.ok, report.summary()

    async def test_my_env_conforms():  # serves the class on loopback for the duration of the run
        report = await check_environment(MyEnv, slow_action="think hard")
        assert report.ok, report.summary()

It talks to the server with its own minimal WebSocket client (wire.py), not the SDK client, so it
also catches bugs that the SDK's client and server would share. spec/CONFORMANCE.md explains the
options and how to read the report.
"""

from .framework import CHECKS, Check, CheckResult, ConformanceOptions
from .local import QUICK_LIMITS, check_environment, run_conformance_sync
from .runner import NOT_CHECKED, ConformanceReport, ConformanceSetupError, read_expected_failures, run_conformance

__all__ = [
    "CHECKS", "Check", "CheckResult", "ConformanceOptions", "ConformanceReport", "ConformanceSetupError",
    "NOT_CHECKED", "QUICK_LIMITS", "check_environment", "read_expected_failures", "run_conformance", "run_conformance_sync",
]
