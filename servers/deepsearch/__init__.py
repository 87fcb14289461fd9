"""`deepsearch`: retrieval QA with a search tool (BM25 or dense) and a sandboxed Python tool (AgentGym-RL's SearchQA)."""

from .env import DeepSearchEnv

__all__ = ["DeepSearchEnv"]
