"""One episode's record as the page shows it: long texts clipped (the page can ask for all of
it), the token view, budget cuts, and whatever fields this viewer does not know kept as they are."""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence

__all__ = ["TEXT_LIMIT", "TOKEN_LIMIT", "episode_view", "matches_text"]

TEXT_LIMIT = 20_000  # characters of one text field sent unless the page asks for all of it
TOKEN_LIMIT = 20_000  # tokens in the token view
KNOWN_FIELDS = {
    "env", "task", "options", "success", "score", "reward", "finish", "error", "max_turns", "turns", "text",
    "prompt_length", "tokens", "loss_mask", "logprobs", "step", "observation", "model", "turn_tokens",
    "messages", "usage", "error_kind",  # gymwire eval's fields (chat backends keep messages, not tokens)
    "prompt_messages", "episode_tokens", "sampling", "seconds",  # every player's record (trainers/episode.py)
}
KNOWN_TURN_FIELDS = {
    "action", "observation", "reward", "start", "end", "metrics", "images", "terminated", "truncated",
    "stopped", "policy_s", "env_s",
}


def _clip(text: Any, full: bool, where: str, notes: list[str]) -> Any:
    if not isinstance(text, str) or full or len(text) <= TEXT_LIMIT:
        return text
    notes.append(f"{where}: {len(text):,} characters, showing the first {TEXT_LIMIT:,}")
    return text[:TEXT_LIMIT]


def _clip_json(value: Any, full: bool, where: str, notes: list[str]) -> Any:
    """An unknown value shown as JSON text, clipped like any other text."""
    return _clip(json.dumps(value, ensure_ascii=False, indent=1), full, where, notes)


def matches_text(record: Any, needle: str) -> bool:
    """Full-text search: does an action or observation contain `needle` (already lower case)?"""
    if not isinstance(record, dict):
        return False
    texts = [record.get("observation")]
    for turn in record.get("turns") or []:
        if isinstance(turn, dict):
            texts += [turn.get("action"), turn.get("observation")]
    return any(isinstance(t, str) and needle in t.lower() for t in texts)


def _images(value: Any) -> list[str]:
    """Images a turn carries, as data URLs the page can show (base64 strings or {mime, data})."""
    images = []
    for image in value if isinstance(value, list) else []:
        if isinstance(image, str) and image.startswith("data:image/"):
            images.append(image)
        elif isinstance(image, dict) and isinstance(image.get("data"), str):
            images.append(f"data:{image.get('mime') or 'image/png'};base64,{image['data']}")
    return images


def _token_view(
    record: dict[str, Any], decode: Callable[[Sequence[int]], list[str]] | None, turn_tokens: int | None, notes: list[str]
) -> dict[str, Any] | None:
    tokens = record.get("tokens")
    if not isinstance(tokens, list) or not tokens:
        return None
    shown = tokens[:TOKEN_LIMIT]
    if len(tokens) > TOKEN_LIMIT:
        notes.append(f"token view: {len(tokens):,} tokens, showing the first {TOKEN_LIMIT:,}")
    mask = record.get("loss_mask") if isinstance(record.get("loss_mask"), list) else []
    logprobs = record.get("logprobs") if isinstance(record.get("logprobs"), list) else []
    valid_ids = all(isinstance(t, int) for t in shown)
    pieces = decode(shown) if decode is not None and valid_ids else [str(t) for t in shown]
    cuts: list[dict[str, Any]] = []
    for number, turn in enumerate(record.get("turns") or [], 1):
        if isinstance(turn, dict) and isinstance(turn.get("start"), int) and isinstance(turn.get("end"), int):
            generated = turn["end"] - turn["start"] + 1
            if turn_tokens is not None and generated >= turn_tokens:
                cuts.append({"at": turn["end"], "budget": "turn_tokens",
                             "why": f"turn {number} used all {turn_tokens} turn_tokens: its generation stopped there"})
    if record.get("finish") == "token_budget":
        cuts.append({"at": len(tokens) - 1, "budget": "episode_tokens",
                     "why": "episode_tokens budget: the next turn would not fit, so the episode ended"})
    return {
        "ids": shown,
        "pieces": pieces,
        "decoded": decode is not None and valid_ids,
        "model": [bool(m) for m in mask[: len(shown)]],
        "logprobs": [lp if isinstance(lp, (int, float)) and math.isfinite(lp) else None for lp in logprobs[: len(shown)]],
        "prompt_length": record.get("prompt_length") if isinstance(record.get("prompt_length"), int) else None,
        "turn_starts": [t["start"] for t in record.get("turns") or [] if isinstance(t, dict) and isinstance(t.get("start"), int)],
        "cuts": cuts,
        "total": len(tokens),
    }


def episode_view(
    record: Any,
    raw: bytes,
    *,
    full: bool = False,
    decode: Callable[[Sequence[int]], list[str]] | None = None,
    turn_tokens: int | None = None,
) -> dict[str, Any]:
    """What the episode page draws. `record` is the parsed line (None when it did not parse)."""
    notes: list[str] = []
    if not isinstance(record, dict):
        text = raw.decode("utf-8", errors="replace")
        return {"unreadable": True, "raw": _clip(text, full, "raw line", notes), "raw_length": len(raw), "notes": notes}
    turns = []
    for number, turn in enumerate(record.get("turns") if isinstance(record.get("turns"), list) else [], 1):
        if not isinstance(turn, dict):
            turns.append({"problem": f"turn {number} is a JSON {type(turn).__name__}, not an object", "value": turn})
            continue
        turns.append({
            "action": _clip(turn.get("action"), full, f"turn {number} action", notes),
            "observation": _clip(turn.get("observation"), full, f"turn {number} observation", notes),
            "reward": turn.get("reward"),
            "start": turn.get("start"),
            "end": turn.get("end"),
            "metrics": turn.get("metrics"),
            "images": _images(turn.get("images")),
            "other": {k: _clip_json(v, full, f"turn {number} {k}", notes) for k, v in turn.items() if k not in KNOWN_TURN_FIELDS},
        })
    if turns == [] and not isinstance(record.get("turns"), list):
        notes.append("no turns list in this record")
    prompt = None
    tokens = record.get("tokens")
    prompt_length = record.get("prompt_length")
    messages = record.get("messages") if isinstance(record.get("messages"), list) else None
    if isinstance(record.get("observation"), str):
        prompt = record["observation"]
    elif decode is not None and isinstance(tokens, list) and tokens and isinstance(prompt_length, int):
        prompt = "".join(decode(tokens[:prompt_length]))
    elif messages:  # a chat backend: the messages up to the first user message
        shown = []
        for message in messages:
            if isinstance(message, dict):
                shown.append(f"[{message.get('role')}]\n{message.get('content')}")
                if message.get("role") == "user":
                    break
        prompt = "\n\n".join(shown)
    unknown = {k: _clip_json(v, full, f"field {k}", notes) for k, v in record.items() if k not in KNOWN_FIELDS}
    return {
        "env": record.get("env"),
        "task": record.get("task"),
        "options": record.get("options"),
        "model": record.get("model"),
        "success": record.get("success"),
        "score": record.get("score"),
        "reward": record.get("reward"),
        "finish": record.get("finish"),
        "error": record.get("error"),
        "max_turns": record.get("max_turns"),
        "usage": record.get("usage"),
        "error_kind": record.get("error_kind"),
        "sampling": record.get("sampling"),
        "seconds": record.get("seconds"),
        "messages": _clip_json(messages, full, "messages", notes) if messages else None,
        "prompt": _clip(prompt, full, "first observation", notes),
        "text": _clip(record.get("text"), full, "text", notes),
        "turns": turns,
        "tokens": _token_view(record, decode, turn_tokens, notes),
        "unknown": unknown,
        "notes": notes,
    }
