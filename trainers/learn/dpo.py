"""DPO on pairs of episodes of one task (a rewarded one against an unrewarded one), with TRL's DPOTrainer.

Pairs come from trajectories.preference_rows: the two episodes share every turn up to the first
where the agent's replies differ; that shared conversation is the prompt and the two replies are
the chosen and rejected completions, so only the agent's tokens of that turn carry the loss. TRL
renders the conversational rows with the model's chat template (the same layout the policy sees
in eval for a ChatML template) and computes the sigmoid DPO loss against a frozen copy of the
starting model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .sft import MetricsLog, load_policy_model, trainer_arguments

__all__ = ["DPOSettings", "train_dpo", "dpo_loss"]


@dataclass
class DPOSettings:
    beta: float = 0.1
    epochs: float = 1.0
    lr: float = 5e-6
    batch_rows: int = 4
    threads: int | None = None
    seed: int = 0
    logging_steps: int = 5
    max_steps: int = -1
    time_limit_s: float | None = None


def dpo_loss(policy_chosen: Any, policy_rejected: Any, reference_chosen: Any, reference_rejected: Any, beta: float) -> Any:
    """The DPO objective (Rafailov et al. 2023) per pair, from summed completion log-probs:
    -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))."""
    import torch.nn.functional as F

    return -F.logsigmoid(beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)))


def make_trainer(model: Any, tokenizer: Any, pairs: Sequence[dict[str, Any]], output: Path, settings: DPOSettings,
                 ref_model: Any = None, callbacks: Sequence[Any] = ()) -> Any:
    """TRL's DPOTrainer on conversational pairs (prompt, chosen, rejected: lists of messages)."""
    try:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer
    except ImportError as exc:
        raise ImportError(f"DPO needs TRL and datasets: pip install 'gymwire[learn]' ({exc})") from exc

    dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    config = DPOConfig(
        **trainer_arguments(output, settings.epochs, settings.lr, settings.batch_rows, settings.max_steps,
                            settings.logging_steps, settings.seed),
        beta=settings.beta,
    )
    return DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      callbacks=list(callbacks))


def train_dpo(model_spec: str, pairs: Sequence[dict[str, Any]], output: str | Path, settings: DPOSettings) -> Path:
    """DPO from `model_spec` (also the frozen reference) on `pairs`; returns OUTPUT/model."""
    import torch

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.jsonl").unlink(missing_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model, tokenizer = load_policy_model(model_spec)
    reference, _ = load_policy_model(model_spec)
    (output / "config.json").write_text(json.dumps({"model": model_spec, "pairs": len(pairs), **asdict(settings)}, indent=2) + "\n")
    log = MetricsLog(output / "metrics.jsonl", [], settings, stage="dpo")  # type: ignore[arg-type]
    trainer = make_trainer(model, tokenizer, pairs, output, settings, ref_model=reference, callbacks=[log])
    trainer.train()
    target = output / "model"
    trainer.model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
