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

It talks to the server with its own minimal WebSocket client (wire.py), not the SDK client, and
checks against its own copy of the spec's tables (spec_tables.py), not gymwire.protocol's, so it
also catches bugs that the SDK's client and server would share. spec/CONFORMANCE.md explains the
options and how to read the report.
"""

from importlib import import_module
from typing import Any

# Exports load on first use: `gymwire --help` builds this command's parser from cli.py alone. CHECKS
# comes from runner, whose import registers every check.
_EXPORTS = {
    "CHECKS": "runner", "Check": "framework", "CheckResult": "framework", "ConformanceOptions": "framework",
    "QUICK_LIMITS": "local", "check_environment": "local", "run_conformance_sync": "local",
    "NOT_CHECKED": "runner", "ConformanceReport": "runner", "ConformanceSetupError": "runner",
    "read_expected_failures": "runner", "run_conformance": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
