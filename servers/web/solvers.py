"""Scripted MiniWoB++ solvers that play through the observation text alone, as an agent would.

Each solver reads the objective and the accessibility tree of the current observation and answers
one action in WebArena's grammar; the reward is MiniWoB's own. `SOLVED_TYPES` lists the task
types they cover. They prove the environment end to end (page, tree, ids, actions, reward); they
are not agents.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Callable

_LINE = re.compile(r"^(\t*)\[(\d+)\] (\S+) ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")(.*)$")
_VALUE = re.compile(r"\bvalue: ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
_ORDINALS = {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4, "6th": 5, "7th": 6, "8th": 7, "9th": 8, "10th": 9}


@dataclass(frozen=True)
class Node:
    id: int
    role: str
    name: str
    depth: int
    rest: str

    @property
    def value(self) -> str:
        match = _VALUE.search(self.rest)
        return ast.literal_eval(match.group(1)) if match else ""

    def has(self, prop: str) -> bool:
        return prop in self.rest


def parse_tree(text: str) -> list[Node]:
    nodes = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            tabs, node_id, role, name, rest = match.groups()
            nodes.append(Node(int(node_id), role, ast.literal_eval(name), len(tabs), rest))
    return nodes


def _quoted(objective: str) -> list[str]:
    return re.findall(r'"([^"]*)"', objective)


def _one(nodes: list[Node], role: str | None = None, name: str | None = None) -> Node:
    found = [n for n in nodes if (role is None or n.role == role) and (name is None or n.name == name)]
    if not found:
        raise SolverStuck(f"no {role or 'element'} named {name!r}")
    return found[0]


class SolverStuck(RuntimeError):
    """The page does not look as the solver expects."""


class MiniWoBSolver:
    """One episode's solver: `act(observation_text)` -> the next action."""

    def __init__(self, task_type: str) -> None:
        if task_type not in SOLVERS:
            raise ValueError(f"no scripted solver for {task_type!r}; solved types: {sorted(SOLVERS)}")
        self.task_type = task_type
        self.clicked: list[int] = []

    def act(self, observation: str) -> str:
        objective = next((line[len("OBJECTIVE: "):] for line in observation.splitlines() if line.startswith("OBJECTIVE: ")), "")
        nodes = [n for n in parse_tree(observation) if n.role != "RootWebArea"]
        action = SOLVERS[self.task_type](self, objective, nodes)
        match = re.match(r"click \[(\d+)\]", action)
        if match:
            self.clicked.append(int(match.group(1)))
        return action


Solver = Callable[[MiniWoBSolver, str, list[Node]], str]


def _click(node: Node) -> str:
    return f"click [{node.id}]"


def _fill_then(nodes: list[Node], values: list[str], button: str) -> str:
    """Type each value into the textboxes in order (Enter not pressed), then press the button."""
    boxes = [n for n in nodes if n.role == "textbox"]
    for box, value in zip(boxes, values):
        masked = set(box.value) == {"•"}  # a password field shows bullets
        if box.value != value and not (masked and len(box.value) == len(value)):
            return f"type [{box.id}] [{value}] [0]"
    return _click(next(n for n in nodes if n.role == "button" and n.name.lower() == button.lower()))


def click_test(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    return _click(_one(nodes, "button"))


def click_named_button(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    quoted = _quoted(objective)
    name = quoted[0] if quoted else objective.split("button ")[-1].rstrip(".")
    if name == "x" and s.task_type == "click-dialog-2":
        name = "Close"  # the dialog's "x" is its close button
    return _click(_one(nodes, "button", name))


def click_button_sequence(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    first, second = re.findall(r"button (\w+)", objective)[:2]
    target = _one(nodes, "button", first)
    return _click(target if target.id not in s.clicked else _one(nodes, "button", second))


def click_text(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    name = _quoted(objective)[0]
    return _click(next(n for n in nodes if n.name == name and n.role in ("link", "StaticText")))


def click_dialog_close(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    return _click(_one(nodes, "button", "Close"))


def focus_text(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    boxes = [n for n in nodes if n.role == "textbox"]
    ordinal = re.search(r"(\d+(?:st|nd|rd|th))", objective)
    return _click(boxes[_ORDINALS[ordinal.group(1)]] if ordinal else boxes[0])


def enter_text(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    text = _quoted(objective)[0]
    if "lower case" in objective:
        text = text.lower()
    elif "upper case" in objective:
        text = text.upper()
    return _fill_then(nodes, [text], "Submit")


def enter_password(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    password = _quoted(objective)[0]
    return _fill_then(nodes, [password, password], "Submit")


def login_user(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    username, password = _quoted(objective)[:2]
    return _fill_then(nodes, [username, password], "Login")


def _select_and_submit(objective: str, nodes: list[Node], role: str) -> str:
    wanted = re.match(r"Select (.*) and click Submit", objective)
    if wanted is None:
        raise SolverStuck(objective)
    names = [] if wanted.group(1) == "nothing" else [w.strip() for w in wanted.group(1).split(",")]
    for node in nodes:
        if node.role == role and (node.name in names) != node.has("checked: 'true'"):
            return _click(node)
    return _click(_one(nodes, "button", "Submit"))


def click_checkboxes(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    return _select_and_submit(objective, nodes, "checkbox")


def click_option(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    return _select_and_submit(objective, nodes, "radio")


def click_tab(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    number = re.search(r"Tab #(\d+)", objective).group(1)  # type: ignore[union-attr]
    return _click(_one(nodes, "link", f"Tab #{number}"))


def click_tab_2(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    name = _quoted(objective)[0]
    panel = next((i for i, n in enumerate(nodes) if n.role == "tabpanel"), len(nodes))
    for node in nodes[panel + 1 :]:
        if node.name == name and node.role in ("link", "StaticText"):
            return _click(node)
    tabs = [nodes[i + 1] if i + 1 < len(nodes) and nodes[i + 1].role == "link" else n for i, n in enumerate(nodes) if n.role == "tab"]
    unvisited = [tab for tab in tabs if tab.id not in s.clicked]
    if not unvisited:
        raise SolverStuck(f"link {name!r} is in no tab")
    return _click(unvisited[0])


def click_collapsible(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    section = next(n for n in nodes if n.role == "tab" and n.name.startswith("Section"))
    return _click(section) if section.id not in s.clicked else _click(_one(nodes, "button", "Submit"))


def click_widget(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    kind = _quoted(objective)[0]
    if kind in ("text", "textarea"):
        multiline = kind == "textarea"
        return _click(next(n for n in nodes if n.role == "textbox" and n.has("multiline: True") == multiline))
    return _click(_one(nodes, kind))


def choose_list(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    name = re.match(r"Select (.*) from the list", objective).group(1)  # type: ignore[union-attr]
    box = _one(nodes, "combobox")
    return f"type [{box.id}] [{name}]" if box.value != name else _click(_one(nodes, "button", "Submit"))


def _submit_answer(nodes: list[Node], answer: str) -> str:
    return _fill_then(nodes, [answer], "Submit")


def simple_arithmetic(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    problem = next(n.name for n in nodes if re.fullmatch(r"-?\d+ [-+x] -?\d+ =", n.name))
    a, op, b, _ = problem.split()
    value = {"+": int(a) + int(b), "-": int(a) - int(b), "x": int(a) * int(b)}[op]
    return _submit_answer(nodes, str(value))


def simple_algebra(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    equation = next(n.name for n in nodes if "=" in n.name and "x" in n.name and n.name != "x =")
    left, right = equation.replace("x", "X").split("=")
    for x in range(-1000, 1001):
        expr = f"({left}) - ({right})".replace("X", f"({x})")
        if re.fullmatch(r"[-+*() \d]+", expr) and eval(expr) == 0:  # digits and operators only
            return _submit_answer(nodes, str(x))
    raise SolverStuck(equation)


def find_word(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    ordinal = re.search(r"(\d+(?:st|nd|rd|th)) word", objective).group(1)  # type: ignore[union-attr]
    textbox = next(i for i, n in enumerate(nodes) if n.role == "textbox")
    paragraph = nodes[textbox - 1].name
    words = [w.strip(".,;:!?") for w in paragraph.split()]
    return _submit_answer(nodes, words[_ORDINALS[ordinal]])


def read_table(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    key = re.match(r"Enter the value of (.*) into the text field", objective).group(1)  # type: ignore[union-attr]
    cells = [n for n in nodes if n.role == "cell"]
    value = next(cells[i + 1].name for i, n in enumerate(cells[:-1]) if n.name == key)
    return _submit_answer(nodes, value)


def copy_paste(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    source = next(n for n in nodes if n.role == "textbox" and n.has("multiline: True"))
    target = next(n for n in nodes if n.role == "textbox" and not n.has("multiline: True"))
    if target.value != source.value:
        return f"type [{target.id}] [{source.value}] [0]"
    return _click(_one(nodes, "button", "Submit"))


_MOVIE_FIELDS = {"director": "Director", "name": "Director", "year": "Year", "date": "Year", "genre": "Genre"}


def _movie_field(text: str) -> str | None:
    return next((field for word, field in _MOVIE_FIELDS.items() if word in text.lower()), None)


def movie_search(s: MiniWoBSolver, objective: str, nodes: list[Node]) -> str:
    """multi-layouts and multi-orderings: one form, laid out in many ways. A field's label comes
    before it, or (when the form starts with a field) after it."""
    genre, director, year = re.match(r"Search for (.*) movies directed by (.*) from year (\d+)", objective).groups()  # type: ignore[union-attr]
    wanted = {"Director": director, "Year": year, "Genre": genre}
    form = nodes[next(i for i, n in enumerate(nodes) if n.name.startswith(".") or n.name == year) + 1 :]
    items = [n for n in form if n.role == "textbox" or _movie_field(n.name)]
    labels_after = bool(items) and items[0].role == "textbox"
    for i, node in enumerate(items):
        if node.role != "textbox":
            continue
        label = node.name or (items[i + 1].name if labels_after and i + 1 < len(items) else items[i - 1].name if i else "")
        field = _movie_field(label)
        if field and node.value != wanted[field]:
            return f"type [{node.id}] [{wanted[field]}] [0]"
    return _click(next(n for n in reversed(form) if n.role in ("button", "StaticText")))  # the form's button comes last


SOLVERS: dict[str, Solver] = {
    "click-test": click_test,
    "click-test-2": click_named_button,
    "click-test-transfer": click_named_button,
    "click-button": click_named_button,
    "unicode-test": click_named_button,
    "click-dialog-2": click_named_button,
    "click-button-sequence": click_button_sequence,
    "click-link": click_text,
    "click-dialog": click_dialog_close,
    "focus-text": focus_text,
    "focus-text-2": focus_text,
    "enter-text": enter_text,
    "enter-text-2": enter_text,
    "enter-text-dynamic": enter_text,
    "enter-password": enter_password,
    "login-user": login_user,
    "click-checkboxes": click_checkboxes,
    "click-checkboxes-large": click_checkboxes,
    "click-checkboxes-transfer": click_checkboxes,
    "click-option": click_option,
    "click-tab": click_tab,
    "click-tab-2": click_tab_2,
    "click-tab-2-easy": click_tab_2,
    "click-tab-2-medium": click_tab_2,
    "click-tab-2-hard": click_tab_2,
    "click-collapsible": click_collapsible,
    "click-collapsible-nodelay": click_collapsible,
    "click-widget": click_widget,
    "choose-list": choose_list,
    "simple-arithmetic": simple_arithmetic,
    "simple-algebra": simple_algebra,
    "find-word": find_word,
    "read-table": read_table,
    "copy-paste": copy_paste,
    "multi-layouts": movie_search,
    "multi-orderings": movie_search,
}
SOLVED_TYPES = tuple(sorted(SOLVERS))
