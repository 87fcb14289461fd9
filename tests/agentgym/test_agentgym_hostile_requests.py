"""The AgentGym HTTP facade against a web page that rebinds its DNS name to 127.0.0.1, JSON numbers
no index can be, and actions that are not Unicode text (red-team review). A rebinding page is, to
the browser, of the same origin as the facade: its GETs carry no Origin, so before this it read
every session's observation with `GET /observation?id=N`. Its requests name the page's host in
Host, which no local client does."""

from __future__ import annotations

import http.client
import json

import pytest

from gymwire.protocol import rebinding_refusal
from gymwire.servers.agentgym.serve import AgentGymFacade
from gymwire.servers.guess import GuessEnv


def call(url: str, method: str, path: str, body: str | None = None, host: str | None = None) -> tuple[int, object]:
    address = url.removeprefix("http://")
    connection = http.client.HTTPConnection(address, timeout=10)
    headers = {"Content-Type": "application/json", "Host": host or address}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    status, answer = response.status, json.loads(response.read())
    connection.close()
    return status, answer


def test_a_rebinding_page_reads_no_observation():
    with AgentGymFacade([(GuessEnv, "babyai")], split="test").run_in_thread() as url:
        port = url.rsplit(":", 1)[1]
        assert call(url, "POST", "/create", "{}") == (200, {"id": 0})
        status, first = call(url, "POST", "/reset", '{"id": 0, "data_idx": 1}')
        assert status == 200 and "number" in first["observation"]
        for page_host in (f"rebind.attacker.example:{port}", f"127.0.0.1.nip.io:{port}", "attacker.example"):
            status, answer = call(url, "GET", "/observation?id=0", host=page_host)
            assert status == 403 and "Host header" in answer["error"], (page_host, answer)
            assert first["observation"] not in json.dumps(answer)
        # Local clients, by address or by name, are served as before.
        for local in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"):
            assert call(url, "GET", "/observation?id=0", host=local) == (200, first["observation"])


def test_the_host_check_applies_to_a_server_on_loopback_only():
    assert rebinding_refusal("attacker.example:36001", "127.0.0.1") is not None
    assert rebinding_refusal("attacker.example:36001", "::1") is not None
    assert rebinding_refusal(None, "localhost") is not None
    assert rebinding_refusal("gym-textcraft:36001", "0.0.0.0") is None  # a cluster's service name
    assert rebinding_refusal("localhost:36001", "127.0.0.1") is None


@pytest.mark.parametrize("body", ['{"id": 1e999}', '{"id": 0, "data_idx": 1e999}', '{"id": 0, "data_idx": -1e999}'])
def test_json_infinity_is_an_error_answer_not_a_500(body):
    with AgentGymFacade([(GuessEnv, "babyai")], split="test").run_in_thread() as url:
        assert call(url, "POST", "/create", "{}") == (200, {"id": 0})
        status, answer = call(url, "POST", "/reset", body)
        assert status == 200 and ("whole number" in answer["error"] or "give the session" in answer["error"]), answer
        status, answer = call(url, "POST", "/reset", '{"id": 0}')  # the facade goes on
        assert status == 200 and "number" in answer["observation"]


def test_a_lone_surrogate_in_an_action_is_an_error_answer_and_the_session_plays_on():
    """JSON lets `\\ud800` through (the gym port's decoder refuses it); Deep Search's sandbox could
    not encode such code and the step failed as a crash (UnicodeEncodeError)."""
    from gymwire.servers.deepsearch import DeepSearchEnv

    with AgentGymFacade([(DeepSearchEnv, None)], split="test").run_in_thread() as url:
        assert call(url, "POST", "/create", "{}")[0] == 200
        status, answer = call(url, "POST", "/step", '{"id": 0, "action": "<python>\\n# \\ud800\\nprint(1)\\n</python>"}')
        assert status == 200 and "lone surrogate" in answer["error"], answer
        status, answer = call(url, "POST", "/step", '{"id": 0, "action": "<search>Bucaramanga</search>"}')
        assert status == 200 and "<information>" in answer["observation"], answer


def test_sessions_are_capped_and_a_closed_one_frees_its_place():
    # AgentGym's API has no token: without a cap one client could hold every thread and all memory.
    with AgentGymFacade([(GuessEnv, "babyai")], split="test", max_sessions=2).run_in_thread() as url:
        assert call(url, "POST", "/create", "{}") == (200, {"id": 0})
        assert call(url, "POST", "/create", "{}") == (200, {"id": 1})
        status, refused = call(url, "POST", "/create", "{}")
        assert status == 200 and "most sessions (2)" in refused["error"]
        status, first = call(url, "POST", "/reset", '{"id": 1, "data_idx": 1}')  # the others go on
        assert status == 200 and "number" in first["observation"]
        assert call(url, "POST", "/close", '{"id": 0}')[0] == 200
        assert call(url, "POST", "/create", "{}") == (200, {"id": 2})  # a refused create took no id
    with pytest.raises(ValueError, match="at least 1"):
        AgentGymFacade([(GuessEnv, "babyai")], max_sessions=0)
