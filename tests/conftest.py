"""Shared by every test folder: tests that run `gymwire serve` in-process configure the `gymwire`
logger (a handler at their level), which would otherwise stay for every later test. Hypothesis
runs without its per-example deadline: tests check behaviour, not speed (speed is measured in
bench/), and a loaded CI machine made a 2 ms example take 388 ms."""

import logging

import pytest
from hypothesis import settings

settings.register_profile("gymwire", deadline=None)
settings.load_profile("gymwire")


@pytest.fixture(autouse=True)
def _restore_gymwire_logging():
    logger = logging.getLogger("gymwire")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
