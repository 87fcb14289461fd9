"""AgentGym's environment servers as gymwire environments (`gymwire serve agentgym:FAMILY=URL`)."""

from .bridge import AgentGymBridge, bridge_spec, parse_bridge_spec

__all__ = ["AgentGymBridge", "bridge_spec", "parse_bridge_spec"]
