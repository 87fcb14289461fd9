"""AgentGym's environment servers as gymwire environments (`gymwire serve agentgym:FAMILY=URL`).

The bridge needs aiohttp (the `agentgym` extra) and is imported on first use, so that the
profiles in this package (which TextCraft, BabyAI and SciWorld import) do not need it.
"""

from typing import Any

__all__ = ["AgentGymBridge", "bridge_spec", "parse_bridge_spec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import bridge

        return getattr(bridge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
