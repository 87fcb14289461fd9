"""Supervised learning on trajectories (behaviour cloning, SFT) with TRL's SFTTrainer.

gymwire lays the tokens out (tokens.py: the rows a model meets in eval, `completion_mask` on the
agent's tokens only); TRL runs the training loop on those pre-tokenized rows (it turns the mask
into labels, -100 elsewhere). The model comes from the project's factory (trainers/models/local.py), so
a known name (`smollm2`), a GGUF file or a checkpoint folder all work, and the result is an
ordinary checkpoint folder that `gymwire eval`, `gymwire train` and this module load the same way.
Optional LoRA (PEFT) adapters are merged into the saved checkpoint.

Each run writes OUTPUT/metrics.jsonl (one record per logging step: loss, learning rate, trained
tokens and tokens/s), OUTPUT/config.json and the checkpoint in OUTPUT/model.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .tokens import TokenRow

__all__ = ["SFTSettings", "train_sft", "MetricsLog", "load_policy_model"]


@dataclass
class SFTSettings:
    epochs: float = 2.0
    lr: float = 5e-5
    batch_rows: int = 4  # rows per optimizer step (gradient accumulation of single rows: no padding on CPU)
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lora_rank: int = 0  # 0: full fine-tune
    lora_alpha: int = 32
    train_layers: int | None = None  # train only the top N transformer layers (and the final norm); None: all
    threads: int | None = None
    seed: int = 0
    logging_steps: int = 1
    max_steps: int = -1
    time_limit_s: float | None = None  # stop (and save) after this many seconds of training
    extra: dict[str, Any] = field(default_factory=dict)


def trainer_arguments(output: Path, epochs: float, lr: float, batch_rows: int, max_steps: int, logging_steps: int,
                      seed: int) -> dict[str, Any]:
    """The transformers TrainingArguments gymwire's SFT and DPO share: single rows accumulated to
    `batch_rows` (no padding on CPU), no checkpoints or reporters, bf16 on a GPU."""
    import torch

    return dict(
        output_dir=str(output / "trainer"), num_train_epochs=epochs, max_steps=max_steps, learning_rate=lr,
        per_device_train_batch_size=1, gradient_accumulation_steps=batch_rows, logging_steps=logging_steps,
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
        seed=seed, max_length=None, dataloader_num_workers=0, disable_tqdm=True,
        # TRL turns activation checkpointing on by default. On a CPU a small model's activations fit
        # and recomputing the forward pass would cost about a quarter of the time; on a GPU, memory
        # is what limits.
        gradient_checkpointing=torch.cuda.is_available(),
    )


def load_policy_model(spec: str, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) by the project's factory; the tokenizer gets a pad token if it has none."""
    from gymwire.trainers.models.backends import load_model

    model, tokenizer, _ = load_model(spec, device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class MetricsLog:
    """A transformers TrainerCallback (built lazily) that appends each log record, with trained
    tokens and tokens/s since the start, to metrics.jsonl, and stops training at a time limit."""

    def __new__(cls, path: Path, rows: Sequence[TokenRow], settings: SFTSettings, stage: str = "sft") -> Any:
        from transformers import TrainerCallback

        tokens_per_epoch = sum(len(row.input_ids) for row in rows)

        class _Log(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                self.started = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if settings.time_limit_s is not None and time.perf_counter() - self.started > settings.time_limit_s:
                    control.should_training_stop = True

            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
                seconds = time.perf_counter() - self.started
                tokens = tokens_per_epoch * float(state.epoch or 0.0)
                record = {"stage": stage, "step": state.global_step, "epoch": state.epoch, "seconds": round(seconds, 1),
                          "trained_tokens": int(tokens), "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
                          **(logs or {})}
                with path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")

        return _Log()


def freeze_below(model: Any, train_layers: int) -> None:
    """Train only the top `train_layers` decoder layers and the final norm: no gradient flows
    below them, so the backward pass stops there (cheaper than LoRA on a CPU, where the backward
    through every layer is what costs)."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None) or decoder.h  # Llama-style or GPT-2
    norm = getattr(decoder, "norm", None) or decoder.ln_f
    if not 0 < train_layers <= len(layers):
        raise ValueError(f"train_layers must be from 1 to {len(layers)}, got {train_layers}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module in [*layers[len(layers) - train_layers:], norm]:
        for parameter in module.parameters():
            parameter.requires_grad_(True)


def _agent_token_trainer(base: type) -> type:
    """`base` (TRL's SFTTrainer) with a loss that runs the LM head only where a label is: the
    agent's tokens are a few percent of a row, and the head with its 49k-word softmax at every
    position is most of the cost TRL's own loss adds. Same loss (token-mean cross-entropy over
    the labelled tokens of the optimizer step); rows come one per micro-batch."""
    import torch

    class AgentTokenSFT(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            labels = inputs["labels"]
            if labels.shape[0] != 1:
                raise ValueError("AgentTokenSFT takes one row per micro-batch (per_device_train_batch_size=1)")
            positions = (labels[0, 1:] != -100).nonzero().squeeze(-1)  # logits here predict the next token
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                            logits_to_keep=positions, use_cache=False)
            targets = labels[0, positions + 1]
            loss = torch.nn.functional.cross_entropy(outputs.logits[0].float(), targets, reduction="sum")
            count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
            loss = loss / count
            return (loss, outputs) if return_outputs else loss

    return AgentTokenSFT


def train_sft(model_spec: str, rows: Sequence[TokenRow], output: str | Path, settings: SFTSettings) -> Path:
    """Fine-tune `model_spec` on `rows`; returns the saved checkpoint folder (OUTPUT/model)."""
    import torch

    try:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer
    except ImportError as exc:
        raise ImportError(f"supervised learning needs TRL and datasets: pip install 'gymwire[learn]' ({exc})") from exc

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.jsonl").unlink(missing_ok=True)  # a run in the same folder starts its record afresh
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    model, tokenizer = load_policy_model(model_spec)
    (output / "config.json").write_text(json.dumps({"model": model_spec, "rows": len(rows),
                                                    "row_tokens": sum(len(r.input_ids) for r in rows),
                                                    "agent_tokens": sum(sum(r.completion_mask) for r in rows),
                                                    **asdict(settings)}, indent=2) + "\n")
    peft_config = None
    if settings.lora_rank:
        from peft import LoraConfig

        peft_config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    dataset = Dataset.from_list([{"input_ids": r.input_ids, "completion_mask": r.completion_mask} for r in rows])
    AgentTokenSFT = _agent_token_trainer(SFTTrainer)
    config = SFTConfig(**{
        **trainer_arguments(output, settings.epochs, settings.lr, settings.batch_rows, settings.max_steps,
                            settings.logging_steps, settings.seed),
        "lr_scheduler_type": "cosine",
        "warmup_steps": settings.warmup_ratio,
        "weight_decay": settings.weight_decay,
        "completion_only_loss": True,
        **settings.extra,  # the caller's own arguments win, gradient_checkpointing included
    })
    if settings.train_layers is not None:
        freeze_below(model, settings.train_layers)
    trainer = AgentTokenSFT(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[MetricsLog(output / "metrics.jsonl", rows, settings)])
    trainer.model_accepts_loss_kwargs = True  # compute_loss divides by the step's label count itself
    trainer.train()
    trained = trainer.model
    if settings.lora_rank:
        trained = trained.merge_and_unload()
    target = output / "model"
    trained.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
