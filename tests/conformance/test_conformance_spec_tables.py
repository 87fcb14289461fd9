"""The suite's tables are read back out of spec/PROTOCOL.md, and the suite takes nothing it asserts
from the implementation: its modules import no gymwire code (local.py alone, which serves the
implementation for an environment author's tests, does)."""

import ast
import re
from pathlib import Path

from gymwire.sdk.conformance import spec_tables

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_MD = (ROOT / "spec" / "PROTOCOL.md").read_text(encoding="utf-8")
SUITE = ROOT / "sdk" / "conformance"
BACKTICKED = re.compile(r"`([a-z_]+)`")


def section(number: str) -> str:
    """The text of `## N.` up to the next heading of the same level."""
    return re.search(rf"^## {re.escape(number)}\. .*?(?=^## )", PROTOCOL_MD, re.S | re.M).group(0)


def table_rows(text: str) -> list[list[str]]:
    """The cells of a markdown table's body rows."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_error_table_is_the_spec_table():
    table = PROTOCOL_MD.split("<!-- error-table:start -->")[1].split("<!-- error-table:end -->")[0]
    in_spec = {int(code): (name, retryable == "yes") for code, name, retryable, _meaning in table_rows(table)}
    assert spec_tables.ERROR_TABLE == in_spec


def test_subprotocols_are_the_specs():
    assert set(re.findall(r"`(gymwire\.v1\+\w+)`", section("3"))) == set(spec_tables.SUBPROTOCOL_BY_ENCODING.values())
    for encoding, subprotocol in spec_tables.SUBPROTOCOL_BY_ENCODING.items():
        assert subprotocol.endswith(f"+{encoding}")


def test_capabilities_are_those_the_welcome_may_list():
    rule = next(line for line in PROTOCOL_MD.splitlines() if line.startswith("- **GW-HANDSHAKE-4**"))
    listed = BACKTICKED.findall(rule.split(" among ", 1)[1].split(";", 1)[0])
    assert tuple(listed) == spec_tables.CAPABILITIES


def test_server_message_types_are_the_answers_pings_notices_and_errors():
    requests = section("5")
    answers = set()
    for request, answer, _capability in table_rows(requests.split("Requests and their answers:", 1)[1]):
        answers.update(BACKTICKED.findall(answer))
        if "either side" in request:
            answers.update(BACKTICKED.findall(request))
    schemas = {path.stem for path in (ROOT / "spec" / "schemas").glob("*.json")}
    after_table = requests.split("Every request may instead be answered by", 1)[1]
    unsolicited = set(BACKTICKED.findall(after_table)) & schemas  # the paragraph also names fields (`id`)
    assert unsolicited == {"error", "notice"}
    assert spec_tables.SERVER_MESSAGE_TYPES == answers | unsolicited
    assert answers <= schemas


def test_limit_fields_are_the_specs():
    rows = table_rows(section("12").split("- **GW-LIMIT-1**", 1)[0])
    assert tuple(BACKTICKED.search(limit).group(1) for limit, *_ in rows) == spec_tables.LIMIT_FIELDS


def test_the_suite_imports_no_gymwire_code():
    for path in sorted(SUITE.glob("*.py")):
        if path.name == "local.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("gymwire"), f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("gymwire") for alias in node.names), f"{path.name}: {ast.dump(node)}"


def test_every_error_name_a_check_expects_is_in_the_table():
    expected = set()
    for path in sorted(SUITE.glob("checks_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "expect_error":
                names = node.args[1]
                for constant in names.elts if isinstance(names, ast.Tuple) else [names]:
                    if isinstance(constant, ast.Constant):
                        expected.add(constant.value)
    assert len(expected) > 10, "the scan found too few expect_error calls: has their signature changed?"
    assert expected <= set(spec_tables.ERROR_CODE_BY_NAME), sorted(expected - set(spec_tables.ERROR_CODE_BY_NAME))
