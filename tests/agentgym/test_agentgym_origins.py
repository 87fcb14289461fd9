"""The AgentGym HTTP facade refuses browsers as the gym server does: a web page's POST (which always
carries Origin, even when the page may not read the answer) creates and steps no session unless its
origin is allowed; AgentGym's own clients send no Origin and are served."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from gymwire.servers.agentgym.serve import AgentGymFacade
from gymwire.servers.guess import GuessEnv


def post(url: str, body: dict | None = None, origin: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "text/plain"}  # what a page's no-cors fetch may send without asking
    if origin is not None:
        headers["Origin"] = origin
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_page_cannot_create_sessions_unless_its_origin_is_allowed():
    facade = AgentGymFacade([(GuessEnv, "babyai")], split="test", allowed_origins=["https://lab.example"])
    with facade.run_in_thread() as url:
        status, answer = post(url + "/create", origin="http://127.0.0.1:9000")
        assert status == 403 and answer["error"].startswith("FORBIDDEN_ORIGIN")
        assert all(not served.sessions for served in facade.served.values())
        assert post(url + "/create") == (200, {"id": 0})  # AgentGym's client: no Origin
        assert post(url + "/create", origin="https://lab.example") == (200, {"id": 1})
