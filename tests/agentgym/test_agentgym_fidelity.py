"""gymwire's `profile: agentgym`, served by `gymwire agentgym-serve`, answers exactly as AgentGym's own
servers answered: transcripts recorded from AgentGym's TextCraft, BabyAI and SciWorld servers (its
main, 3ef9235, run unmodified) by bench/agentgym_fidelity.py --record, replayed here request by
request. The transcripts hold AgentGym's answers only (test data, no AgentGym code).

Refresh them with AgentGym's servers running:
    python bench/agentgym_fidelity.py --textcraft URL --babyai URL --sciworld URL --textcraft-order DIR \\
        --textcraft-tasks 0-543:8 ... --record tests/agentgym/data --replies
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.registry import resolve_env
from gymwire.servers.agentgym.api import line_action, react_action
from gymwire.servers.agentgym.serve import AgentGymFacade

DATA = Path(__file__).parent / "data"


def transcript(name: str) -> dict[str, Any]:
    with gzip.open(DATA / f"{name}.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


def post(url: str, path: str, body: Any) -> Any:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(f"{url}/{path}", data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def without_id(answer: Any) -> Any:
    return {k: v for k, v in answer.items() if k != "id"} if isinstance(answer, dict) else answer


def replay(name: str, tmp_path: Path) -> tuple[int, list[str]]:
    recorded = transcript(name)
    spec = resolve_env(recorded["env"])
    if recorded["textcraft_order"]:
        # The recipe-file order of the AgentGym installation that was recorded.
        order = tmp_path / "order.txt"
        order.write_text("\n".join(recorded["textcraft_order"]))
        spec = EnvSpec.of(spec.env_class, agentgym_order=str(order))
    compared, differences = 0, []
    session = None
    with AgentGymFacade([(spec, None)], options=recorded["options"]).run_in_thread() as url:
        for path, body, theirs in recorded["calls"]:
            if path == "create":
                ours = post(url, "create", body)
                session = ours["id"]
                if recorded["env"] == "textcraft" and theirs["id"] != session:
                    continue  # /create plays task `id`: comparable when the ids agree
            else:
                ours = post(url, path, {**body, "id": session})
            compared += 1
            if isinstance(theirs, dict) and "error" in theirs and path == "step":
                # AgentGym refuses a step after the end (and its client then crashes): gymwire answers it.
                ok = isinstance(ours, dict) and isinstance(ours.get("observation"), str) and ours.get("done") is True
            else:
                ok = without_id(ours) == without_id(theirs)
            if not ok:
                differences.append(f"{path} {body}: AgentGym {str(theirs)[:300]!r}, gymwire {str(ours)[:300]!r}")
    return compared, differences


@pytest.mark.parametrize("name", ["textcraft", "babyai"])
def test_replays_agentgyms_answers(name, tmp_path):
    compared, differences = replay(name, tmp_path)
    assert compared > 500 and not differences, differences[:3]


def test_replays_agentgyms_sciworld_answers(tmp_path):
    compared, differences = replay("sciworld", tmp_path)
    assert compared > 50 and not differences, differences[:3]


def test_raw_replies_are_read_as_agentgyms_clients_read_them():
    readers = {"textcraft": line_action, "babyai": line_action, "sciworld": react_action}
    recorded = transcript("replies")["replies"]
    assert set(recorded) == set(readers)
    for env, pairs in recorded.items():
        assert len(pairs) > 20
        for reply, sent in pairs:
            assert readers[env](reply) == sent, (env, reply)
