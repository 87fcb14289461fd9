"""`guess`: find a hidden whole number with higher/lower feedback. The SDK's example environment."""

from .env import GuessEnv

__all__ = ["GuessEnv"]
