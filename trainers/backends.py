"""The trainer's policy backend by name. A module of its own so that trainers/policy.py (the
interface every backend imports) imports no backend."""

from __future__ import annotations

from typing import Any

from .hf_policy import TransformersPolicy
from .policy import POLICY_BACKENDS, PolicyBackend
from .vllm_policy import VLLMPolicy

__all__ = ["make_policy"]


def make_policy(kind: str, model: Any, tokenizer: Any, **options: Any) -> PolicyBackend:
    """A backend by name: "transformers" generates with `model` itself; "vllm" loads `model`'s
    weights into a vLLM engine (`options` go to `vllm.LLM`)."""
    if kind == "transformers":
        return TransformersPolicy(model, pad_id=tokenizer.pad_token_id, **options)
    if kind == "vllm":
        return VLLMPolicy(model, tokenizer, **options)
    raise ValueError(f"unknown policy backend {kind!r}; choose one of {', '.join(POLICY_BACKENDS)}")
