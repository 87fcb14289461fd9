"""The one place models and policies are built: `gymwire train`, `gymwire eval` and `gymwire model`
all load a model and make its policy here, so they read the same weights and the same tokenizer.

    load_model(spec, device) -> (model, tokenizer, folder)
        `spec`: a known model's name (smollm2), a .gguf file or a checkpoint folder. A GGUF file (a
        known model is one) is read through the checkpoint folder `models.checkpoint_folder`
        prepares from it once, weights and tokenizer alike; fp32, on `device`.
    load_tokenizer(spec) -> (tokenizer, folder)     the same, without the weights (vLLM loads its own)
    make_policy(backend, model, tokenizer, **options) -> PolicyBackend
        "transformers": generates with the torch `model` (options: max_batch, reuse_cache);
        "vllm": a vLLM engine on the model's folder (`model`: a loaded model or the folder; options
        go to vllm.LLM); "openai": an OpenAI-compatible endpoint serving the model named `model`
        (options: base_url, api_key_env, timeout, retries, concurrency; no tokenizer).
Devices are devices.torch_device's ("auto", "cpu", "cuda", "cuda:N"). Heavy imports (torch, transformers, vllm, openai) happen in the functions that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..policy import POLICY_BACKENDS, PolicyBackend
from .local import ModelError, checkpoint_folder

__all__ = ["load_model", "load_tokenizer", "make_policy", "BACKENDS", "ModelError"]

BACKENDS = (*POLICY_BACKENDS, "openai")  # POLICY_BACKENDS: those that can train


def _folder(spec: str | Path) -> Path:
    folder = checkpoint_folder(str(spec))
    if not (folder / "config.json").exists():
        raise ModelError(
            f"no Hugging Face checkpoint at {folder} (config.json missing): give a checkpoint folder, "
            "a known model (smollm2) or a .gguf file"
        )
    return folder


def load_tokenizer(spec: str | Path) -> tuple[Any, Path]:
    from transformers import AutoTokenizer

    folder = _folder(spec)
    return AutoTokenizer.from_pretrained(folder), folder


def load_model(spec: str | Path, device: Any = "cpu") -> tuple[Any, Any, Path]:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer, folder = load_tokenizer(spec)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
    return model, tokenizer, folder


def make_policy(backend: str, model: Any, tokenizer: Any = None, **options: Any) -> PolicyBackend:
    if backend == "transformers":
        from .hf_policy import TransformersPolicy

        return TransformersPolicy(model, pad_id=tokenizer.pad_token_id, **options)
    if backend == "vllm":
        from .vllm_policy import VLLMPolicy

        return VLLMPolicy(str(model) if isinstance(model, (str, Path)) else model.name_or_path, tokenizer, **options)
    if backend == "openai":
        from .openai_policy import OpenAIPolicy

        return OpenAIPolicy(model=model, **options)
    raise ValueError(f"unknown policy backend {backend!r}; choose one of {', '.join(BACKENDS)}")
