"""Reading the agent's text as a TextCraft command, leniently.

Accepted: a ReAct reply (`Thought: ...` then `Action: ...`; the last `Action:` counts) or a bare
command on its first line. Case, extra spaces, underscores, a `minecraft:` prefix, surrounding
quotes/backticks/brackets, a trailing period and counts written `4x` are tolerated. Item names are
returned normalized but unresolved: the recipe book decides what they mean (and forgives plurals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gymwire.sdk.actions import ActionParseError, action_line

__all__ = [
    "Get", "Craft", "ShowInventory", "Command", "ActionParseError", "parse_action", "normalize_name", "quote",
    "MAX_COUNT", "USAGE",
]

MAX_COUNT = 1000
USAGE = (
    "Valid actions: `get N item` (base items only), `craft N item using N ingredient, N ingredient, ...`, "
    "and `inventory`."
)


@dataclass(frozen=True, slots=True)
class Get:
    item: str
    count: int


@dataclass(frozen=True, slots=True)
class Craft:
    item: str
    count: int | None  # None: "craft stick using 2 oak planks", the ingredients decide
    ingredients: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ShowInventory:
    pass


Command = Get | Craft | ShowInventory

_INVENTORY = re.compile(r"^(?:(?:check|show|view|open|look at)\s+)?(?:(?:my|the)\s+)?inventory$")
_GET = re.compile(r"^get\s+(.+)$")
_CRAFT = re.compile(r"^craft\s+(.+?)\s+(?:using|from|with)\s+(.+)$")
# "4 oak planks", "4x oak planks", "4 x oak planks", or no count at all.
_COUNTED = re.compile(r"^(?:(\d+)\s*(?:x\s+|x(?=[^a-z])|\s))?\s*(.+)$")
_WRAPPERS = "`'\"[]()<>*"


def quote(text: str, limit: int = 80) -> str:
    """`text` in backticks for an observation, cut short: echoing a huge action back helps no one."""
    text = text.strip()
    return f"`{text if len(text) <= limit else text[: limit - 3] + '...'}`"


def normalize_name(text: str) -> str:
    """`Minecraft:Oak_Planks` -> `oak planks`."""
    text = text.lower().replace("minecraft:", " ").replace("_", " ")
    return " ".join(text.split()).strip(_WRAPPERS + " .!")


def _command_text(text: str) -> str:
    # Lowercase, drop markup and prefixes, and turn underscores into spaces before matching.
    command = action_line(text, USAGE).lower().replace("minecraft:", " ").replace("_", " ")
    command = " ".join(command.strip(_WRAPPERS + " ").split())
    return command.rstrip(".!").strip(_WRAPPERS + " ")


def _counted(text: str, default: int | None, what: str) -> tuple[int | None, str]:
    match = _COUNTED.match(text.strip())
    if match is None or not match.group(2).strip(_WRAPPERS + " "):
        raise ActionParseError(f"I could not read {what} in {quote(text)}: write a number and an item, e.g. `2 oak planks`.")
    digits = match.group(1)
    # More digits than MAX_COUNT has is out of range anyway (and int() refuses past 4300 digits).
    count = (int(digits) if len(digits) <= len(str(MAX_COUNT)) else MAX_COUNT + 1) if digits is not None else default
    if count is not None and not 1 <= count <= MAX_COUNT:
        shown = count if digits is None or len(digits) <= 12 else f"{digits[:12]}... ({len(digits)} digits)"
        raise ActionParseError(f"{what.capitalize()} {quote(text)} has count {shown}; counts go from 1 to {MAX_COUNT}.")
    return count, normalize_name(match.group(2))


def parse_action(text: str) -> Command:
    """The command in the agent's reply. Raises ActionParseError with advice when there is none."""
    command = _command_text(text)
    if _INVENTORY.match(command):
        return ShowInventory()
    if match := _CRAFT.match(command):
        count, item = _counted(match.group(1), None, "the item to craft")
        parts = [p for p in re.split(r"\s*,\s*|\s+and\s+", match.group(2)) if p.strip(_WRAPPERS + " ")]
        if not parts:
            raise ActionParseError(f"{quote(command)} names no ingredients after `using`. {USAGE}")
        ingredients: dict[str, int] = {}
        for part in parts:
            amount, name = _counted(part, 1, "an ingredient")
            ingredients[name] = ingredients.get(name, 0) + (amount or 1)
        return Craft(item, count, tuple(ingredients.items()))
    if command.startswith("craft"):
        raise ActionParseError(f"{quote(command)} does not say what to craft with. Write `craft N item using N a, N b`. {USAGE}")
    if match := _GET.match(command):
        count, item = _counted(match.group(1), 1, "the item to get")
        return Get(item, count or 1)
    raise ActionParseError(f"{quote(command)} is not an action I know. {USAGE}")
