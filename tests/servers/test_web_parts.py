"""The web environments' parts that need no browser: the action grammar, the tree's text, the task
list and index arithmetic, WebArena's config loader and matchers."""

from __future__ import annotations

import json

import pytest

from gymwire.sdk.environment import TaskError
from gymwire.servers.web.actions import Action, ActionError, parse_action
from gymwire.servers.web.axtree import render
from gymwire.servers.web.env import key_combo
from gymwire.servers.web.miniwob import TASK_TYPES, TEST_SEED_OFFSET, index_of, task_of
from gymwire.servers.web.solvers import SOLVED_TYPES, parse_tree
from gymwire.servers.web.webarena import WebArenaConfigError, contents_score, load_tasks, parse_sites, string_score, url_score


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("click [12]", Action("click", element=12)),
        ("Thought: the button.\nAction: CLICK [12]", Action("click", element=12)),
        ("In summary, the next action I will perform is ```click [7]```", Action("click", element=7)),
        ("Action:\n```\nhover [3]\n```", Action("hover", element=3)),
        ("click 12", Action("click", element=12)),
        ("type [5] [hello world]", Action("type", element=5, text="hello world", press_enter=True)),
        ("type [5] [hello] [0]", Action("type", element=5, text="hello", press_enter=False)),
        ("type [5] [a] [b] [press_enter_after=0]", Action("type", element=5, text="a] [b", press_enter=False)),
        ("type [5] [a] [b]", Action("type", element=5, text="a] [b", press_enter=True)),
        ("press [Control+a]", Action("press", text="Control+a")),
        ("scroll [direction=down]", Action("scroll", text="down")),
        ("scroll [UP]", Action("scroll", text="up")),
        ("goto [http://127.0.0.1:8000/a?b=c]", Action("goto", text="http://127.0.0.1:8000/a?b=c")),
        ("go back", Action("go_back")),
        ("go_forward", Action("go_forward")),
        ("new_tab", Action("new_tab")),
        ("tab_focus [2]", Action("tab_focus", tab=2)),
        ("close_tab", Action("close_tab")),
        ("stop [$3.50]", Action("stop", text="$3.50")),
        ("stop", Action("stop", text="")),
        ("I looked around.\nclick [4]\n", Action("click", element=4)),
    ],
)
def test_actions_are_read_leniently(reply, expected):
    assert parse_action(reply) == expected


@pytest.mark.parametrize(
    "reply, message",
    [
        ("", "no action"),
        ("jump [3]", "unknown action"),
        ("click [submit]", "element id"),
        ("type [4]", "the text"),
        ("scroll [left]", "direction"),
        ("tab_focus [x]", "tab index"),
        ("goto", "URL"),
        ("press", "key combo"),
    ],
)
def test_unusable_actions_say_why(reply, message):
    with pytest.raises(ActionError, match=message):
        parse_action(reply)


def test_key_combos_use_playwright_names():
    assert key_combo("ctrl+a") == "Control+a"
    assert key_combo("Enter") == "Enter" and key_combo("cmd + shift + t") == "Meta+Shift+t"


def _node(node_id, role, name="", children=(), backend=None, ignored=False, properties=(), value=None):
    node = {"nodeId": str(node_id), "role": {"value": role}, "name": {"value": name}, "childIds": [str(c) for c in children],
            "ignored": ignored, "properties": [{"name": k, "value": {"value": v}} for k, v in properties]}
    if backend is not False:
        node["backendDOMNodeId"] = backend or node_id
    if value is not None:
        node["value"] = {"value": value}
    return node


def test_tree_text_has_ids_and_leaves_out_noise():
    nodes = [
        _node(1, "RootWebArea", "Shop", [2], properties=[("focused", True), ("url", "http://x/")]),
        _node(2, "generic", "", [3, 4, 6, 8], ignored=False),
        _node(3, "link", "Home", [9], properties=[("focusable", True), ("url", "http://x/home")]),
        _node(9, "StaticText", "Home", [10]),
        _node(10, "InlineTextBox", "Home", []),
        _node(4, "none", "", [5], ignored=True),
        _node(5, "textbox", "Search", [], properties=[("required", False), ("multiline", False)], value="mugs"),
        _node(6, "textbox", "Notes", [], properties=[("multiline", True), ("labelledby", None)]),
        _node(8, "StaticText", "Open daily", []),
    ]
    tree = render(nodes)
    assert tree.text.splitlines() == [
        "[1] RootWebArea 'Shop' focused: True",
        "\t[3] link 'Home' url: 'http://x/home'",
        "\t[5] textbox 'Search' value: 'mugs' required: False",
        "\t[6] textbox 'Notes' multiline: True",
        "\t[8] StaticText 'Open daily'",
    ]
    assert tree.ids == {1, 3, 5, 6, 8}
    assert [(n.id, n.role, n.name, n.value) for n in parse_tree(tree.text)][2] == (5, "textbox", "Search", "mugs")


def test_task_types_are_miniwobs_and_indices_round_trip():
    import miniwob.envs.miniwob_envs as registered

    subdomains = {c.subdomain for c in vars(registered).values() if isinstance(c, type) and getattr(c, "subdomain", None)}
    assert set(TASK_TYPES) == subdomains and len(TASK_TYPES) == 125
    assert set(SOLVED_TYPES) <= set(TASK_TYPES)
    for split in ("train", "test"):
        for task_type in ("ascending-numbers", "click-button", "visual-addition"):
            for round_ in (0, 3):
                assert task_of(split, index_of(task_type, round_))[0] == task_type
    assert task_of("train", index_of("click-button", 3)) == ("click-button", 3)
    assert task_of("test", index_of("click-button", 3)) == ("click-button", TEST_SEED_OFFSET + 3)


def test_webarena_string_matchers():
    assert string_score({"exact_match": "$3"}, "'$3'") == 1.0
    assert string_score({"exact_match": "$3"}, "$3.00") == 0.0
    assert string_score({"must_include": ["Monday", "Friday"]}, "monday to friday") == 1.0
    assert string_score({"must_include": ["Monday", "Friday"]}, "monday") == 0.0
    # A lone one-word reference must be a whole word of the answer.
    assert string_score({"must_include": ["4"]}, "it is 4 items") == 1.0
    assert string_score({"must_include": ["4"]}, "it is 14 items") == 0.0
    assert string_score({"fuzzy_match": "N/A"}, "n/a") == 1.0
    with pytest.raises(TaskError, match="LLM judge"):
        string_score({"fuzzy_match": ["a shop"]}, "a shop")


def test_webarena_url_and_content_matchers():
    assert url_score("http://h/item.html?sku=mug", "http://h/item.html?sku=mug&ref=nav") == 1.0
    assert url_score("http://h/item.html?sku=mug", "http://h/item.html?sku=pen") == 0.0
    assert url_score("http://h/a |OR| http://h/b/", "http://h/b") == 1.0
    assert contents_score({"exact_match": "Cart: 4"}, "cart: 4") == 1.0
    assert contents_score({"must_include": ["lamp |OR| lamps", "red"]}, "Results for red lamps") == 1.0
    assert contents_score({"must_include": ["lamp |OR| lamps", "blue"]}, "Results for red lamps") == 0.0


def test_webarena_config_loading(tmp_path):
    (tmp_path / "1.json").write_text(json.dumps({"task_id": 1, "start_url": "__A__ |AND| __B__/x", "intent": "i", "eval": {}}))
    (tmp_path / "0.json").write_text(json.dumps({"task_id": 0, "start_url": "__A__", "intent": "j", "eval": {}, "storage_state": "auth.json"}))
    tasks = load_tasks(tmp_path)
    assert [t.task_id for t in tasks] == [0, 1]
    assert tasks[1].start_urls == ("__A__", "__B__/x") and tasks[0].storage_state == str(tmp_path / "auth.json")
    (tmp_path / "bad.json").write_text(json.dumps({"task_id": 2, "intent": "no start url"}))
    with pytest.raises(WebArenaConfigError, match="start_url"):
        load_tasks(tmp_path)
    with pytest.raises(WebArenaConfigError, match="no such file"):
        load_tasks(tmp_path / "missing.json")
    assert parse_sites("SHOPPING=http://h:7770/, __GITLAB__=http://h:8023") == {"__SHOPPING__": "http://h:7770", "__GITLAB__": "http://h:8023"}
    with pytest.raises(WebArenaConfigError, match="PLACEHOLDER=http"):
        parse_sites("SHOPPING:7770")
