"""`gymwire view`'s index and JSON API over a real aiohttp server on loopback: bad input is shown
as such, growing files are followed, filters and full-text search find the right episodes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gymwire.sdk.cli import main
from gymwire.trainers.episode import EnvTask, Episode, Turn
from gymwire.trainers.viewer.episodes import TEXT_LIMIT, episode_view
from gymwire.trainers.viewer.index import Catalog, find_runs
from gymwire.trainers.viewer.server import make_app


def episode(index: int, *, success: bool, observation: str = "3 is wrong. Go higher.", split: str = "train") -> dict:
    tokens = [1, 2, 3, 10, 4, 5, 11]
    return Episode(
        task=EnvTask("guess", split, index), group=index // 2, options={"low": 1, "high": 7}, max_turns=3,
        prompt_length=3, tokens=tokens, loss_mask=[0, 0, 0, 1, 0, 0, 1], logprobs=[0, 0, 0, -0.1, 0, 0, -2.5],
        turns=[Turn(" 3", observation, 0.0, 3, 3), Turn(" 5", "Right!" if success else "5 is wrong.", float(success), 6, 6)],
        finish="terminated" if success else "truncated", success=success, score=float(success), text="...",
    ).to_json()


def lines(*records: dict) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


async def wait_for(client: TestClient, url: str, condition, timeout_s: float = 10.0) -> dict:
    """Poll the API until `condition(body)` holds: the server's own follow task reads the files."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        response = await client.get(url)
        assert response.status == 200, await response.text()
        body = await response.json()
        if condition(body):
            return body
        assert loop.time() < deadline, f"{url}: condition not met, last answer {body}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def open_viewer():
    clients = []

    async def start(*paths: Path) -> TestClient:
        client = TestClient(TestServer(make_app(Catalog(find_runs(paths)), follow_s=0.05), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def test_bad_input_is_shown_as_such_and_the_server_keeps_answering(tmp_path, open_viewer):
    run = tmp_path / "run"
    (run / "rollouts").mkdir(parents=True)
    (run / "config.json").write_text("{not json")
    big = episode(2, success=True, observation="x" * 1_000_000)
    unknown = {**episode(3, success=False), "judge_notes": {"verdict": "lucky"}, "success": "maybe"}
    good = lines(episode(0, success=True))
    (run / "rollouts" / "step-000001.jsonl").write_text(
        good + good[: len(good) // 2] + "\n" + lines(big, unknown) + "[1, 2]\n"
    )
    client = await open_viewer(run)
    state = await wait_for(client, "/api/state", lambda s: s["indexed"])
    notes = " | ".join(state["runs"][0]["notes"])
    assert "config.json could not be read" in notes and "no metrics file" in notes
    assert "2 episode line(s) could not be read" in notes

    listing = await wait_for(client, "/api/episodes", lambda b: b["total"] == 5)
    truncated, not_an_object = [r for r in listing["rows"] if r["problem"]]
    assert truncated["problem"].startswith("line 2: not valid JSON")
    assert "not an episode object" in not_an_object["problem"]
    assert (await (await client.get("/api/episodes?problems=1")).json())["total"] == 2

    shown = await (await client.get(f"/api/episode/{truncated['id']}")).json()
    assert shown["unreadable"] and shown["raw"] == good[: len(good) // 2] and "not valid JSON" in shown["problem"]

    clipped = await (await client.get(f"/api/episode/{listing['rows'][2]['id']}")).json()
    assert len(clipped["turns"][0]["observation"]) == TEXT_LIMIT
    assert "turn 1 observation: 1,000,000 characters, showing the first 20,000" in clipped["notes"]
    whole = await (await client.get(f"/api/episode/{listing['rows'][2]['id']}?full=1")).json()
    assert len(whole["turns"][0]["observation"]) == 1_000_000

    odd = await (await client.get(f"/api/episode/{listing['rows'][3]['id']}")).json()
    assert json.loads(odd["unknown"]["judge_notes"]) == {"verdict": "lucky"}
    assert listing["rows"][3]["success"] is None  # a wrongly typed field counts as absent, not as True

    assert (await client.get("/api/episode/0.0.99")).status == 404
    assert (await client.get("/api/episodes?task=abc")).status == 400
    assert (await client.get("/api/state")).status == 200


async def test_growing_files_are_followed_and_a_half_written_line_is_read_again(tmp_path, open_viewer):
    run = tmp_path / "run"
    (run / "rollouts").mkdir(parents=True)
    metrics = run / "metrics.jsonl"
    metrics.write_text(lines({"step": 1, "train/success": 0.1}, {"step": 2, "train/success": 0.2}))
    first = run / "rollouts" / "step-000002.jsonl"
    first.write_text(lines(episode(0, success=False)))
    client = await open_viewer(run)
    await wait_for(client, "/api/episodes", lambda b: b["total"] == 1)

    line = lines(episode(1, success=True))
    with first.open("a") as out:
        out.write(line[:40])  # the trainer is in the middle of writing this line
    half = await wait_for(client, "/api/episodes", lambda b: b["total"] == 2)
    assert "still being written" in half["rows"][1]["problem"]
    with first.open("a") as out:
        out.write(line[40:])
    done = await wait_for(client, "/api/episodes", lambda b: b["total"] == 2 and b["rows"][1]["problem"] is None)
    assert done["rows"][1]["success"] is True

    (run / "rollouts" / "step-000004.jsonl").write_text(lines(episode(2, success=True), episode(3, success=True)))
    with metrics.open("a") as out:
        out.write(lines({"step": 3, "train/success": 0.3}, {"step": 4, "train/success": 0.4, "eval/success": 0.5}))
    later = await wait_for(client, "/api/episodes?step=4", lambda b: b["total"] == 2)
    assert {r["task"] for r in later["rows"]} == {2, 3}
    records = (await wait_for(client, "/api/metrics", lambda m: len(m["0"]) == 4))["0"]
    assert records[-1]["eval/success"] == 0.5

    metrics.write_text(lines({"step": 1, "train/success": 0.9}))  # a resume rewrote it shorter
    await wait_for(client, "/api/metrics", lambda m: m["0"] == [{"step": 1, "train/success": 0.9}])
    # A step replayed after a resume rewrites its file in place, here longer than before.
    (run / "rollouts" / "step-000004.jsonl").write_text(lines(*(episode(i, success=False) for i in (7, 8, 9))))
    replayed = await wait_for(client, "/api/episodes?step=4", lambda b: b["total"] == 3)
    assert [r["task"] for r in replayed["rows"]] == [7, 8, 9]


async def test_filters_and_full_text_search(tmp_path, open_viewer):
    path = tmp_path / "episodes.jsonl"
    path.write_text(lines(
        episode(0, success=True),
        episode(1, success=False, observation="Déjà vu: 3 is wrong. Go LOWER."),
        episode(2, success=False, split="test"),
        episode(3, success=True, observation='He said "lower", then left'),
    ))
    client = await open_viewer(path)
    await wait_for(client, "/api/state", lambda s: s["indexed"])
    count = lambda query: client.get(f"/api/episodes?{query}")  # noqa: E731

    assert (await (await count("success=1")).json())["total"] == 2
    assert [r["task"] for r in (await (await count("split=test")).json())["rows"]] == [2]
    assert [r["task"] for r in (await (await count("task=1&finish=truncated")).json())["rows"]] == [1]
    assert [r["task"] for r in (await (await count("q=go%20lower")).json())["rows"]] == [1]  # case-insensitive
    assert [r["task"] for r in (await (await count("q=d%C3%A9j%C3%A0")).json())["rows"]] == [1]  # non-ASCII
    assert [r["task"] for r in (await (await count("q=%22lower%22")).json())["rows"]] == [3]  # quotes in the text
    assert (await (await count("q=guess")).json())["total"] == 0  # env name: not an action or observation
    facets = await (await client.get("/api/facets")).json()
    assert facets["split"] == ["test", "train"] and facets["finish"] == ["terminated", "truncated"]

    view = await (await client.get("/api/episode/0.0.2")).json()
    tokens = view["tokens"]
    assert tokens["model"] == [False, False, False, True, False, False, True] and tokens["logprobs"][6] == -2.5
    assert tokens["decoded"] is False and tokens["pieces"][3] == "10"  # no tokenizer for a bare file: ids


def test_view_command_refuses_a_missing_path_in_one_line(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nope"), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist; pass a training run directory" in err
    (tmp_path / "empty").mkdir()
    assert main(["view", str(tmp_path / "empty"), "--no-browser"]) == 2
    assert "no run here" in capsys.readouterr().err


def eval_episode(index: int, *, success: bool, finish: str | None = None) -> dict:
    """An episode as `gymwire eval` writes it with a chat backend: no token ids, messages instead."""
    record = episode(index, success=success, split="test")
    for turn in record["turns"]:
        turn["start"] = turn["end"] = None
    record.update(tokens=[], loss_mask=[], logprobs=[], prompt_length=0,
                  messages=[{"role": "user", "content": "I am thinking of a number from 1 to 7."}],
                  usage={"prompt_tokens": 40, "completion_tokens": 4, "requests": 2, "retries": 0},
                  error_kind="policy.timeout" if finish == "error" else None)
    if finish:
        record["finish"] = finish
    return record


async def test_eval_outputs_are_summarised_while_running_and_then_from_results(tmp_path, open_viewer):
    out = tmp_path / "evals" / "tiny-a"
    (out / "episodes").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"format": "gymwire.eval/1", "model": "tiny-a", "split": "test"}))
    episodes = out / "episodes" / "guess.jsonl"
    # Task 1 failed with an error and was retried on resume: its last line counts.
    episodes.write_text(lines(eval_episode(0, success=True), eval_episode(1, success=False, finish="error"),
                              eval_episode(2, success=False), eval_episode(1, success=True)))
    client = await open_viewer(tmp_path / "evals")  # a folder of eval outputs
    state = await wait_for(client, "/api/state", lambda s: s["indexed"] and s["runs"][0]["episodes"] == 4)
    run = state["runs"][0]
    assert run["name"] == "tiny-a" and run["kind"] == "eval" and run["results"] is None
    assert run["live"]["guess"]["episodes"] == 3 and run["live"]["guess"]["success"] == pytest.approx(2 / 3)

    view = await (await client.get("/api/episode/0.0.2")).json()
    assert view["error_kind"] == "policy.timeout" and view["usage"]["requests"] == 2
    assert view["prompt"] == "[user]\nI am thinking of a number from 1 to 7." and view["tokens"] is None
    assert "judge" not in view["unknown"] and "messages" not in view["unknown"]

    results = {"format": "gymwire.eval/1", "envs": {"guess": {"episodes": 3, "success": {"mean": 0.67, "low": 0.2, "high": 0.94}}}}
    (out / "results.json").write_text(json.dumps(results))
    state = await wait_for(client, "/api/state", lambda s: s["runs"][0]["results"] is not None)
    assert state["runs"][0]["results"] == results


def test_token_view_marks_where_budgets_cut():
    record = {**episode(0, success=False), "finish": "token_budget"}
    record["turns"][0]["end"] = 4  # the first turn generated 2 tokens (3 and 4), the second 1
    view = episode_view(record, b"", turn_tokens=2, decode=lambda ids: [f"<{i}>" for i in ids])
    assert [(c["at"], c["budget"]) for c in view["tokens"]["cuts"]] == [(4, "turn_tokens"), (6, "episode_tokens")]
    assert view["tokens"]["pieces"][:2] == ["<1>", "<2>"] and view["prompt"] == "<1><2><3>"


def test_turn_images_and_metrics_are_passed_to_the_page():
    record = episode(0, success=True)
    record["turns"][0].update(images=[{"mime": "image/png", "data": "iVBORw0KGgo="}, "data:image/jpeg;base64,/9j/",
                                      "http://example.com/x.png"], metrics={"progress": 0.5})
    turn = episode_view(record, b"")["turns"][0]
    assert turn["images"] == ["data:image/png;base64,iVBORw0KGgo=", "data:image/jpeg;base64,/9j/"]  # never a remote URL
    assert turn["metrics"] == {"progress": 0.5}


def test_paths_are_recognised_by_what_they_hold(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(lines({"step": 1, "train/success": 0.5}))
    (tmp_path / "episodes.jsonl").write_text(lines(episode(0, success=True)))
    for name in ("a", "b"):
        (tmp_path / "runs" / name / "x").mkdir(parents=True)
        (tmp_path / "runs" / name / "x" / "config.json").write_text("{}")
    (tmp_path / "runs" / "eval" / "an-eval" / "episodes").mkdir(parents=True)  # where gymwire eval writes
    (tmp_path / "runs" / "eval" / "an-eval" / "run.json").write_text(json.dumps({"model": "m"}))
    runs = find_runs([tmp_path / "metrics.jsonl", tmp_path / "episodes.jsonl", tmp_path / "runs" / "a", tmp_path / "runs" / "b",
                      tmp_path / "runs"])
    # runs/a and runs/b each hold a run named x: the names take their parent folder; runs/ is looked
    # into a few levels deep (its eval output is two down) and runs already given are not added twice.
    assert [(r.kind, r.name) for r in runs] == [
        ("train", "metrics"), ("episodes", "episodes"), ("train", "a/x"), ("train", "b/x"), ("eval", "m"),
    ]
    assert runs[0].metrics_path == tmp_path / "metrics.jsonl" and runs[1].episode_paths == [tmp_path / "episodes.jsonl"]
