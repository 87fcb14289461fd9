"""WebArena's id-based action grammar, read leniently from an agent's reply, and its limits.

The action is taken from the last `Action: ...` line, else the last ```code``` block, else the
last line that starts with an action name. Case, missing brackets around ids, `go back` for
`go_back` and `scroll [direction=down]` are forgiven.

Every limit on what one action may ask of the browser is here: a reply past them is an
`ActionError` (an observation that says which limit), never work the browser cannot finish in
a step's time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

USAGE = (
    "click [id] | type [id] [text] [press_enter_after=0|1] (Enter is pressed unless 0) | hover [id] | "
    "press [key combo, e.g. Control+a] | scroll [up|down] | goto [url] | go_back | go_forward | new_tab | "
    "tab_focus [tab index] | close_tab | stop [answer]"
)
NAMES = (
    "click", "type", "hover", "press", "scroll", "goto", "go_back", "go_forward",
    "new_tab", "tab_focus", "close_tab", "stop",
)


MAX_ID_DIGITS = 10  # Chromium's node ids are 32-bit; int() of a longer string is pointless (and refused past 4300 digits)
MAX_TAB_DIGITS = 3
MAX_TEXT_CHARS = 10_000  # typed text, a URL, an answer
MAX_KEYS = 5  # keys held together in one `press` combo
MAX_KEY_CHARS = 20  # the longest key name Playwright knows is shorter


class ActionError(ValueError):
    """The reply holds no usable action; the message says why (the observation adds the grammar)."""


@dataclass(frozen=True)
class Action:
    name: str
    element: int | None = None
    text: str = ""  # typed text, key combo, url, scroll direction or answer
    press_enter: bool = True
    tab: int | None = None


_LABEL = re.compile(r"^(?:.*\W)?(?:\*\*)?action(?:\*\*)?\s*:\s*(.*)$", re.IGNORECASE)  # also "Thought: ... Action: x" on one line
_FENCE = re.compile(r"```(?:[a-z]*\n)?(.*?)```", re.DOTALL)
_VERB = re.compile(r"^\s*(go[ _]back|go[ _]forward|new[ _]tab|tab[ _]focus|close[ _]tab|[a-z]+)\b(.*)$", re.IGNORECASE | re.DOTALL)


def _candidate(reply: str) -> str:
    lines = reply.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        match = _LABEL.match(lines[i])
        if match:
            rest = match.group(1).strip() or "\n".join(lines[i + 1 :]).strip()
            fenced = _FENCE.findall(rest)
            return (fenced[-1] if fenced else rest.splitlines()[0] if rest else "").strip().strip("`").strip()
    fenced = _FENCE.findall(reply)
    if fenced:
        return fenced[-1].strip()
    for line in reversed(lines):
        match = _VERB.match(line)
        if match and match.group(1).lower().replace(" ", "_") in NAMES:
            return line.strip()
    return reply.strip()


def _arguments(rest: str) -> list[str]:
    """`[a] [b c]` -> ['a', 'b c']; without brackets the whole rest is one argument (or none)."""
    rest = rest.strip()
    if not rest:
        return []
    if rest.startswith("["):
        # The last bracket group may contain ']' (typed text): split on '] [' only.
        inner = rest[1:]
        if inner.endswith("]"):
            inner = inner[:-1]
        return [part for part in re.split(r"\]\s+\[", inner)]
    return rest.split(maxsplit=1) if rest.split(maxsplit=1)[0].isdigit() else [rest]


def _number(text: str, max_digits: int) -> int | None:
    """A whole number written in ASCII digits, or None (`isdigit` would also take '²' and '٣')."""
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    if len(text) > max_digits:
        raise ActionError(f"{shorten(text, 20)} has {len(text)} digits; use a number shown on the page")
    return int(text)


def _element(args: list[str], name: str) -> int:
    element = _number(args[0], MAX_ID_DIGITS) if args else None
    if element is None:
        raise ActionError(f"{name} needs an element id from the page, e.g. {name} [12]")
    return element


def _text(text: str, what: str) -> str:
    if len(text) > MAX_TEXT_CHARS:
        raise ActionError(f"{what} has {len(text):,} characters; one action takes at most {MAX_TEXT_CHARS:,}")
    return text


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters for an observation: echoing a huge action helps no one."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def parse_action(reply: str) -> Action:
    candidate = _candidate(reply)
    match = _VERB.match(candidate)
    if not match:
        raise ActionError("no action found")
    name = match.group(1).lower().replace(" ", "_")
    if name not in NAMES:
        raise ActionError(f"unknown action {shorten(match.group(1), 40)!r}")
    args = _arguments(match.group(2))
    if name in ("click", "hover"):
        return Action(name, element=_element(args, name))
    if name == "type":
        element = _element(args, name)
        if len(args) < 2:
            raise ActionError("type needs an element id and the text, e.g. type [12] [hello] [0]")
        text = args[1]
        press_enter = True
        if len(args) >= 3:
            flag = args[-1].strip().lower().removeprefix("press_enter_after=")
            if flag not in ("0", "1"):
                text = "] [".join(args[1:])  # the text itself held "] ["
            else:
                press_enter = flag == "1"
                text = "] [".join(args[1:-1])
        return Action(name, element=element, text=_text(text, "the text to type"), press_enter=press_enter)
    if name == "press":
        if not args or not args[0].strip():
            raise ActionError("press needs a key combo, e.g. press [Enter] or press [Control+a]")
        keys = args[0].strip().split("+")
        if len(keys) > MAX_KEYS or any(len(key.strip()) > MAX_KEY_CHARS for key in keys):
            raise ActionError(f"press takes one key combo of at most {MAX_KEYS} keys, e.g. press [Control+a]")
        return Action(name, text=args[0].strip())
    if name == "scroll":
        direction = (args[0] if args else "").strip().lower().removeprefix("direction=")
        if direction not in ("up", "down"):
            raise ActionError("scroll needs a direction: scroll [up] or scroll [down]")
        return Action(name, text=direction)
    if name == "goto":
        if not args or not args[0].strip():
            raise ActionError("goto needs a URL, e.g. goto [http://host/page]")
        return Action(name, text=_text(args[0].strip(), "the URL"))
    if name == "tab_focus":
        tab = _number(args[0], MAX_TAB_DIGITS) if args else None
        if tab is None:
            raise ActionError("tab_focus needs a tab index, e.g. tab_focus [0]")
        return Action(name, tab=tab)
    if name == "stop":
        return Action(name, text=_text(args[0].strip() if args else "", "the answer"))
    return Action(name)
