"""`textcraft`: craft a Minecraft goal item from listed recipes with get/craft/inventory commands."""

from .env import TextCraftEnv

__all__ = ["TextCraftEnv"]
