"""Reading the agent's text as a ScienceWorld command, leniently.

Accepted: a ReAct reply (`Thought: ...` then `Action: ...`; the last `Action:` counts) or a bare
command on its first line. Case, extra spaces, surrounding quotes/backticks/brackets and a trailing
period are tolerated (parentheses that belong to a name, `book (moby dick)`, are kept); the
simulator itself matches the command against its action templates.
"""

from __future__ import annotations

import re

from gymwire.sdk.actions import ActionParseError, action_line

__all__ = ["ActionParseError", "parse_action", "ambiguity_options", "quote", "TEMPLATES", "USAGE", "NO_MATCH", "AMBIGUOUS"]

# ScienceWorld's action templates (PythonInterface.getPossibleActions), OBJ an object's name.
TEMPLATES = (
    "activate OBJ", "close OBJ", "connect OBJ to OBJ", "deactivate OBJ", "disconnect OBJ", "dunk OBJ in OBJ", "eat OBJ",
    "flush OBJ", "focus on OBJ", "go OBJ", "inventory", "look around", "look at OBJ", "look in OBJ", "mix OBJ",
    "move OBJ to OBJ", "open OBJ", "pick up OBJ", "pour OBJ in OBJ", "put down OBJ", "read OBJ", "reset task", "task",
    "use OBJ on OBJ", "wait", "wait1",
)
USAGE = (
    "Valid actions: " + ", ".join(f"`{t}`" for t in TEMPLATES) + ", where OBJ is something named in the room or your "
    "inventory (e.g. `open door to kitchen`, `go to kitchen`, `pick up thermometer`). `look around` shows the room."
)
NO_MATCH = "No known action matches that input."
AMBIGUOUS = "Ambiguous request"

_OPTION = re.compile(r"^\s*(\d+):\s*(.+?)\s*$")
_QUOTES = "`'\"*"
_BRACKETS = {"[": "]", "(": ")", "<": ">", "{": "}"}  # removed only when they enclose the whole command


def quote(text: str, limit: int = 80) -> str:
    text = text.strip()
    return f"`{text if len(text) <= limit else text[: limit - 3] + '...'}`"


def parse_action(text: str) -> str:
    """The command in the agent's reply, lowercased and tidied. Raises ActionParseError."""
    command = _unwrap(" ".join(action_line(text, USAGE).lower().split()))
    if not command:
        raise ActionParseError("Your reply has no action. " + USAGE)
    return command


def _unwrap(text: str) -> str:
    """`[open door].` -> `open door`; `pick up book (moby dick)` keeps its parenthesis."""
    while True:
        before = text
        text = text.strip(_QUOTES + " ").rstrip(".!").strip(_QUOTES + " ")
        if len(text) >= 2 and _BRACKETS.get(text[0]) == text[-1]:
            text = text[1:-1]
        if text == before:
            return text


def ambiguity_options(observation: str) -> list[str]:
    """The numbered choices of ScienceWorld's "Ambiguous request" answer, in order."""
    options = []
    for line in observation.splitlines()[1:]:
        if match := _OPTION.match(line):
            options.append(match.group(2))
    return options
