"""Shared by every test folder: tests that run `gymwire serve` in-process configure the `gymwire`
logger (a handler at their level), which would otherwise stay for every later test."""

import logging

import pytest


@pytest.fixture(autouse=True)
def _restore_gymwire_logging():
    logger = logging.getLogger("gymwire")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
