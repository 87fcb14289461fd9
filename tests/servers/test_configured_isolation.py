"""`--isolation process` plays exactly what in-process plays, for every built-in environment
configured away from its defaults: a process runner's child rebuilds its environment from the
EnvSpec, configuration included. Each test plays the same task and actions against a real server
on loopback twice, in-process and with one process per session, and compares every observation;
it also checks that the configuration took effect (the custom data is what is played)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.server import GymServer
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.deepsearch import DeepSearchEnv
from gymwire.servers.guess import GuessEnv
from gymwire.servers.sciworld import SciWorldEnv
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.servers.textcraft.recipes import load_book
from gymwire.servers.textcraft.solver import plan
from gymwire.servers.web import MiniWoBEnv, WebArenaEnv
from gymwire.servers.web.miniwob import index_of

SITE = Path(__file__).parent / "web_site"


async def play(spec: EnvSpec, isolation: str, actions: list[str], *, task: dict[str, Any], options: dict[str, Any] | None = None) -> list[tuple]:
    """Everything one episode shows: the first observation, then each step's."""
    async with GymServer([spec], port=0, isolation=isolation) as server, GymClient(server.url, request_timeout=120) as client:
        session = await client.open(spec.name, options=options, max_turns=len(actions) + 1, **task)
        seen: list[tuple] = [(session.observation.text, session.observation.data, _images(session.observation))]
        for action in actions:
            if session.done:
                break
            result = await session.step(action)
            seen.append((result.observation.text, result.observation.data, _images(result.observation), result.reward, result.terminated))
        await session.close()
    return seen


def _images(observation: Any) -> list[tuple[str, str]]:
    return [(image.mime, hashlib.sha256(image.data).hexdigest()) for image in observation.images or []]


async def same_in_both(
    spec: EnvSpec, actions: list[str], *, task: dict[str, Any], options: dict[str, Any] | None = None,
    normalize: Callable[[list[tuple]], list[tuple]] = lambda seen: seen,
) -> list[tuple]:
    in_process = normalize(await play(spec, "thread", actions, task=task, options=options))
    isolated = normalize(await play(spec, "process", actions, task=task, options=options))
    assert isolated == in_process
    return in_process


# -- textcraft: a recipe directory of one's own ------------------------------------------------------


def _shapeless(result: str, *ingredients: str, count: int = 1) -> dict:
    return {
        "type": "minecraft:crafting_shapeless",
        "ingredients": [{"tag": i[4:]} if i.startswith("tag:") else {"item": i} for i in ingredients],
        "result": {"item": result, "count": count},
    }


async def test_textcraft_with_its_own_recipes(tmp_path):
    recipes = {
        "plank": _shapeless("toy:plank", "toy:log", count=4),
        "stick": _shapeless("toy:stick", "toy:plank", "toy:plank", count=4),
        "torch": _shapeless("toy:torch", "toy:stick", "toy:coal", count=4),
        "lamp": _shapeless("toy:lamp", "toy:torch", "toy:glass"),
    }
    (tmp_path / "toy").mkdir()
    for name, recipe in recipes.items():
        (tmp_path / "toy" / f"{name}.json").write_text(json.dumps(recipe))
    spec = EnvSpec.of(TextCraftEnv, recipes_dir=str(tmp_path / "toy"), name="toycraft")
    book = load_book(tmp_path / "toy")
    goal = book.splits["test"][0]
    actions = [f"Action: {step}" for step in plan(book, goal)]
    seen = await same_in_both(spec, ["Action: get 1 diamond", *actions], task={"split": "test", "index": 0})
    assert seen[0][1]["goal"] == goal and goal in {"plank", "stick", "torch", "lamp"}
    assert seen[-1][4] is True and seen[-1][3] == 1.0  # the toy goal was crafted, in both


# -- deepsearch: a user's corpus and questions ------------------------------------------------------

CORPUS = [
    {"id": "0", "contents": '"Zorbland"\nZorbland is an island kingdom whose capital is Quillport.'},
    {"id": "1", "contents": '"Quillport"\nQuillport is a harbour town founded by Admiral Pemberton Vask in 1702.'},
]


async def test_deepsearch_with_a_users_corpus_and_questions(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(record) + "\n" for record in CORPUS))
    questions = tmp_path / "test.jsonl"
    questions.write_text(json.dumps({"question": "Who founded the capital of Zorbland?", "golden_answers": ["Pemberton Vask"]}) + "\n")
    spec = EnvSpec.of(DeepSearchEnv, corpus=corpus, questions=questions, name="zorb")
    actions = ["<search>capital of Zorbland</search>", "<search>founded Quillport</search>", "<answer>Pemberton Vask</answer>"]
    seen = await same_in_both(spec, actions, task={"split": "test", "index": 0}, options={"top_k": 1})
    assert seen[0][0] == "Question: Who founded the capital of Zorbland?"
    assert "Zorbland is an island kingdom" in seen[1][0] and seen[-1][4] is True


# -- sciworld: the Java pool's settings ------------------------------------------------------------


async def test_sciworld_with_its_own_pool_settings():
    spec = EnvSpec.of(SciWorldEnv, jvms=1, sessions_per_jvm=2, jvm_heap_mb=1024, call_timeout_s=300)
    try:
        seen = await same_in_both(spec, ["look around", "open door to kitchen", "dance"], task={"split": "test", "index": 110})
    finally:
        spec.make().pool.shutdown()
    assert seen[0][1]["task_id"] == "4-2" and "No known action matches" in seen[-1][0]


# -- web: WebArena tasks against one's own sites, MiniWoB++ browser settings ------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_webarena_with_its_tasks_and_sites(site_url):
    spec = EnvSpec.of(WebArenaEnv, tasks=str(SITE / "tasks.json"), sites={"SHOP": site_url}, sessions_per_browser=2, name="shop")
    seen = await same_in_both(spec, ["scroll [down]", "stop [$3]"], task={"split": "test", "index": 0}, normalize=_renumbered)
    assert "How much does the red pen cost?" in seen[0][0] and seen[0][1]["url"].startswith(site_url)
    assert seen[-1][3] == 1.0 and seen[-1][4] is True


def _renumbered(seen: list[tuple]) -> list[tuple]:
    """Element ids numbered in order of appearance: they are Chromium's DOM node ids, which depend
    on what the browser rendered before (two in-process runs differ too), not on the environment."""

    def renumber(text: str) -> str:
        ids: dict[str, int] = {}
        return re.sub(r"\[(\d+)\]", lambda m: f"[#{ids.setdefault(m.group(1), len(ids))}]", text)

    return [(renumber(step[0]), *step[1:]) for step in seen]


def _without_file_server_port(seen: list[tuple]) -> list[tuple]:
    # Each process serves MiniWoB's task files on a port of its own; the page is the same.
    return json.loads(re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:PORT", json.dumps(_renumbered(seen))))


async def test_miniwob_with_its_own_browser_settings():
    spec = EnvSpec.of(MiniWoBEnv, sessions_per_browser=3, step_timeout_s=60)
    task = {"split": "test", "index": index_of("click-test-2", 0)}
    seen = await same_in_both(spec, ["scroll [down]", "click [999]"], task=task, normalize=_without_file_server_port)
    assert seen[0][1]["task_type"] == "click-test-2"


# -- babyai and guess: no constructor configuration; their session options ---------------------------


async def test_babyai_with_images_and_tile_size():
    seen = await same_in_both(
        EnvSpec.of(BabyAIEnv), ["turn left", "move forward", "check available actions"],
        task={"split": "test", "index": 3}, options={"images": True, "image_tile_size": 8},
    )
    assert "available actions" in seen[-1][0].lower()


async def test_guess_with_its_range_options():
    actions = ["Action: 50", "Action: 25", "Action: 75", "Action: 60"]
    seen = await same_in_both(EnvSpec.of(GuessEnv), actions, task={"seed": 7}, options={"low": 1, "high": 1000, "show_range": True})
    assert seen[0][0] == "I am thinking of a whole number from 1 to 1000. Guess it." and "it is from" in seen[1][0]
