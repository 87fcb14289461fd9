"""`babyai`: MiniGrid's BabyAI levels as text with high-level actions (needs the `babyai` extra)."""

from .env import BabyAIEnv

__all__ = ["BabyAIEnv"]
