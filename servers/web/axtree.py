"""The page's accessibility tree as text with element ids, in WebArena's format.

Chromium's own accessibility tree (CDP `Accessibility.getFullAXTree`) is rendered one node per
line, indented by depth: `[id] role 'name' property: value ...`. The id is the node's backend DOM
node id, which the actions (`click [id]`, ...) name. Nodes that carry nothing for an agent
(ignored nodes, unnamed generic containers, text boxes inside text, a text that repeats its
parent's name) are left out and their children moved up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Properties that every element of a kind has, or that say nothing an agent acts on (as WebArena).
IGNORED_PROPERTIES = frozenset({"focusable", "editable", "readonly", "level", "settable", "invalid"})
# Roles shown only when they have a name.
UNNAMED_HIDDEN = frozenset(
    {"generic", "none", "img", "list", "strong", "emphasis", "paragraph", "banner", "navigation", "Section",
     "LabelText", "Legend", "listitem", "group", "div", "LineBreak", "presentation", "Canvas"}
)
SKIPPED_ROLES = frozenset({"InlineTextBox", "LineBreak"})
MAX_NAME_CHARS = 4000  # a node's name or value past this is cut: a page's one huge text must not fill the observation


@dataclass(frozen=True)
class AXTree:
    text: str
    ids: frozenset[int]  # element ids an action may name


def _value(field: Any) -> Any:
    return field.get("value") if isinstance(field, dict) else None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_NAME_CHARS else f"{text[:MAX_NAME_CHARS]}… ({len(text):,} characters)"


def render(nodes: list[dict[str, Any]]) -> AXTree:
    if not nodes:
        return AXTree("(empty page)", frozenset())
    by_id = {node["nodeId"]: node for node in nodes}
    children_of = {node["nodeId"]: node.get("childIds", []) for node in nodes}
    lines: list[str] = []
    ids: set[int] = set()

    def visit(node_id: str, depth: int, parent_name: str) -> None:
        node = by_id.get(node_id)
        if node is None:
            return
        role = str(_value(node.get("role")) or "")
        name = _cut(str(_value(node.get("name")) or "").strip())
        backend_id = node.get("backendDOMNodeId")
        shown = (
            not node.get("ignored")
            and backend_id is not None
            and role not in SKIPPED_ROLES
            and not (role in UNNAMED_HIDDEN and not name)
            and not (role == "StaticText" and (not name or name == parent_name))
        )
        if role in SKIPPED_ROLES:
            return
        if shown:
            ids.add(int(backend_id))
            parts = [f"[{backend_id}] {role} {name!r}"]
            value = _value(node.get("value"))
            if value not in (None, ""):
                parts.append(f"value: {_cut(value) if isinstance(value, str) else value!r}")
            for prop in node.get("properties", []):
                shown_value = _value(prop.get("value"))
                # Relations (labelledby, controls, ...) carry node lists, not values.
                if (
                    prop["name"] in IGNORED_PROPERTIES
                    or shown_value is None
                    or (prop["name"] == "multiline" and not shown_value)  # shown only for text areas
                    or (prop["name"] == "url" and role == "RootWebArea")
                ):
                    continue
                parts.append(f"{prop['name']}: {shown_value!r}")
            lines.append("\t" * depth + " ".join(parts))
        for child in children_of.get(node_id, []):
            visit(child, depth + 1 if shown else depth, name if shown else parent_name)

    visit(nodes[0]["nodeId"], 0, "")
    return AXTree("\n".join(lines), frozenset(ids))
