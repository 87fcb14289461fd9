"""`gymwire conformance`: exit status, summary and JSON report, expected failures."""

import json
import socket

from broken_servers import AnyTokenServer, SleepyEnv
from conformance_servers import serve

from gymwire.sdk.cli import main

TOKEN = "conformance-cli-token"


def test_conformant_server_exits_0_and_writes_the_json_report(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    with serve([SleepyEnv]) as url:  # host:port, as `gymwire play` takes it
        status = main(["conformance", url.removeprefix("ws://"), "--level", "core", "--json", str(report_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "CONFORMANT at this level" in out and "HANDSHAKE" in out
    report = json.loads(report_path.read_text())
    assert report["ok"] is True and report["level"] == "core" and report["env"] == "sleepy"
    assert report["requirements"]["GW-SESSION-5"]["status"] == "pass"
    assert report["requirements"]["GW-SESSION-5"]["checks"]["replay-last-seq"] == "pass"
    assert report["requirements"]["GW-AUTH-2"]["status"] == "not-checked"


def test_failure_exits_1_unless_expected(tmp_path, capsys):
    expected = tmp_path / "expected.txt"
    expected.write_text("# this server takes any token\nGW-AUTH-1\n")
    with serve([SleepyEnv], AnyTokenServer, token=TOKEN) as url:
        failing = main(["conformance", url, "--token", TOKEN, "--check", "auth"])
        out = capsys.readouterr().out
        tolerated = main(["conformance", url, "--token", TOKEN, "--check", "auth", "--expected-failures", str(expected),
                          "--json", str(tmp_path / "report.json")])
    assert failing == 1
    assert "FAIL  auth [GW-AUTH-1]" in out and "NOT CONFORMANT" in out
    assert tolerated == 0
    assert "XFAIL auth" in capsys.readouterr().out
    report = (tmp_path / "report.json").read_text()
    assert TOKEN not in report and TOKEN not in out, "reports get shared: the bearer token must not appear"
    assert json.loads(report)["requirements"]["GW-AUTH-1"]["status"] == "xfail"


def test_unreachable_server_exits_2(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    status = main(["conformance", f"ws://127.0.0.1:{port}", "--timeout", "2"])
    assert status == 2
    assert "cannot open" in capsys.readouterr().err
