"""Loopback servers for the conformance tests (a plain module: test files must not import conftest,
whose module name other test folders share)."""

import contextlib
from typing import Iterator

from gymwire.protocol import Limits
from gymwire.sdk.conformance import QUICK_LIMITS
from gymwire.sdk.server import GymServer

FAST_LIMITS = Limits(**QUICK_LIMITS)


@contextlib.contextmanager
def serve(envs, server_class=GymServer, **kwargs) -> Iterator[str]:
    """A real server on loopback, in its own thread and event loop; yields its URL."""
    server = server_class(envs, port=0, limits=kwargs.pop("limits", FAST_LIMITS), **kwargs)
    with server.run_in_thread() as url:
        yield url
