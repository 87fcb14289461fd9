"""`sciworld`: ScienceWorld's elementary-science tasks on the real (Java) simulator, as AgentGym serves them."""

from .env import SciWorldEnv

__all__ = ["SciWorldEnv"]
