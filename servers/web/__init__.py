"""`miniwob` and `webarena`: web tasks in a real headless Chromium with WebArena's observation
(accessibility tree with element ids) and id-based actions. Needs `pip install 'gymwire[web]'`
and Chromium (Debian: apt-get install chromium)."""

from .miniwob import MiniWoBEnv
from .webarena import WebArenaEnv

__all__ = ["MiniWoBEnv", "WebArenaEnv"]
