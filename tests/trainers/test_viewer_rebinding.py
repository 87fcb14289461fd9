"""`gymwire view` against a web page whose DNS name is rebound to 127.0.0.1 (red-team review): to the
browser such a page is of the viewer's origin, so its GETs (which carry no Origin) read every
episode of every run. Its requests name the page's host in Host; the viewer now refuses them."""

from __future__ import annotations

import json

from aiohttp.test_utils import TestClient, TestServer

from gymwire.trainers.episode import EnvTask, Episode, Turn
from gymwire.trainers.viewer.index import Catalog, find_runs
from gymwire.trainers.viewer.server import make_app

SECRET = "observation-only-the-trainer-sees-4f2a"


async def test_a_rebinding_page_reads_no_episode(tmp_path):
    run = tmp_path / "run"
    (run / "rollouts").mkdir(parents=True)
    line = Episode(
        task=EnvTask("guess", "train", 0), group=0, options={}, max_turns=1, prompt_length=1, tokens=[1, 2],
        loss_mask=[0, 1], logprobs=[0, -0.1], turns=[Turn(" 3", SECRET, 1.0, 1, 1)], finish="terminated",
        success=True, score=1.0, text="...",
    ).to_json()
    (run / "rollouts" / "step-000001.jsonl").write_text(json.dumps(line) + "\n")
    client = TestClient(TestServer(make_app(Catalog(find_runs([run])), follow_s=0.05), host="127.0.0.1"))
    await client.start_server()
    try:
        port = client.port
        for page_host in (f"rebind.attacker.example:{port}", f"127.0.0.1.nip.io:{port}"):
            for path in ("/api/episodes", "/api/episode/0", "/api/state", "/"):
                response = await client.get(path, headers={"Host": page_host})
                body = await response.text()
                assert response.status == 403 and "Host header" in body and SECRET not in body, (page_host, path)
        for local in (f"127.0.0.1:{port}", f"localhost:{port}"):
            response = await client.get("/api/state", headers={"Host": local})
            assert response.status == 200, local
    finally:
        await client.close()
