"""The gymwire conformance suite: checks a server against spec/PROTOCOL.md over the wire.

From the command line: `gymwire conformance ws://host:port [--env NAME] [--level core|full]`.
From Python or pytest::

    from gymwire.sdk.conformance import run_conformance

    async def test_my_server_conforms(my_server_url):
        report = await run_conformance(my_server_url, env="myenv")
        assert report.ok, report.summary()

It talks to the server with its own minimal WebSocket client (wire.py), not the SDK client, so it
also catches bugs that the SDK's client and server would share. spec/CONFORMANCE.md explains the
options and how to read the report.
"""

from .framework import CHECKS, Check, CheckResult, ConformanceOptions
from .runner import NOT_CHECKED, ConformanceReport, ConformanceSetupError, read_expected_failures, run_conformance

__all__ = [
    "CHECKS", "Check", "CheckResult", "ConformanceOptions", "ConformanceReport", "ConformanceSetupError",
    "NOT_CHECKED", "read_expected_failures", "run_conformance",
]
