"""Reading the action out of an agent's reply, as text environments do: a ReAct reply
(`Thought: ... Action: ...`, the last `Action:` counts) or a bare action."""

from __future__ import annotations

import re

__all__ = ["ActionParseError", "action_line", "MAX_ACTION_CHARS"]

MAX_ACTION_CHARS = 10_000  # the action's line: no command comes near it; a simulator given megabytes takes seconds

_ACTION_LABEL = re.compile(r"\baction\s*:", re.IGNORECASE)
_THOUGHT_LABEL = re.compile(r"^\s*thought\s*:", re.IGNORECASE)


class ActionParseError(ValueError):
    """The reply holds no usable action; the message tells the agent what was wrong."""


def action_line(text: str, usage: str) -> str:
    """The first non-blank line after the reply's last `Action:` label (of the whole reply when it
    has none), stripped. Raises ActionParseError, ending with `usage`, when there is no action or
    that line is longer than MAX_ACTION_CHARS."""
    labels = list(_ACTION_LABEL.finditer(text))
    if labels:
        text = text[labels[-1].end():]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ActionParseError("Your reply has no action. " + ("Write it after `Action:`. " if labels else "") + usage)
    if not labels and _THOUGHT_LABEL.match(lines[0]):
        raise ActionParseError("Your reply has a thought but no `Action:` line. " + usage)
    if len(lines[0]) > MAX_ACTION_CHARS:
        raise ActionParseError(f"Your action is {len(lines[0]):,} characters long; an action is at most {MAX_ACTION_CHARS:,}. " + usage)
    return lines[0]
