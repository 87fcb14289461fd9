"""spec/ stays true to the code: schemas match the models, requirement ids match requirements.json,
every example in PROTOCOL.md is a valid message, and the error table is the code's table."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_samples import SAMPLES

from gymwire.protocol import MESSAGE_TYPES, Codec, Encoding, ProtocolError, error_table
from gymwire.protocol import schemas

SPEC = Path(__file__).resolve().parents[2] / "spec"
PROTOCOL_MD = (SPEC / "PROTOCOL.md").read_text(encoding="utf-8")
REQUIREMENTS = json.loads((SPEC / "requirements.json").read_text(encoding="utf-8"))
REQUIREMENT_LINE = re.compile(r"^- \*\*(GW-([A-Z]+)-(\d+))\*\* (.+)$")
ANY_ID = re.compile(r"GW-[A-Z]+-\d+")
KEYWORD = re.compile(r"\b(MUST|SHOULD)\b")


def prose_lines() -> list[str]:
    """PROTOCOL.md outside fenced code blocks."""
    lines, fenced = [], False
    for line in PROTOCOL_MD.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def defined_requirements() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in prose_lines():
        match = REQUIREMENT_LINE.match(line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} is defined twice"
            found[match.group(1)] = match.group(4)
    return found


def json_examples() -> list[str]:
    return re.findall(r"^```json\n(.*?)^```$", PROTOCOL_MD, re.S | re.M)


# ----------------------------------------------------------------------------- schemas


def test_committed_schemas_match_the_models():
    assert schemas.check(SPEC / "schemas") == []


def test_the_check_command_fails_on_a_stale_schema_and_write_repairs_it(tmp_path, capsys):
    copy = tmp_path / "schemas"
    shutil.copytree(SPEC / "schemas", copy)
    assert schemas.main(["--check", str(copy)]) == 0
    (copy / "step.json").write_text("{}\n", encoding="utf-8")
    (copy / "retired_message.json").write_text("{}\n", encoding="utf-8")
    (copy / "ping.json").unlink()
    assert schemas.main(["--check", str(copy)]) == 1
    report = capsys.readouterr().err
    assert "differs from the models: step.json" in report
    assert "stale (no such message type): retired_message.json" in report
    assert "missing: ping.json" in report
    assert "--write" in report
    assert schemas.main(["--write", str(copy)]) == 0
    assert schemas.check(copy) == []
    assert sorted(p.name for p in copy.iterdir()) == sorted(f"{name}.json" for name in MESSAGE_TYPES)


@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
def test_each_schema_is_valid_and_requires_the_type(message_type):
    schema = json.loads((SPEC / "schemas" / f"{message_type}.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"][0] == "type"
    assert schema["properties"]["type"]["const"] == message_type
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid({"type": "something_else"})
    assert not validator.is_valid([])


# ----------------------------------------------------------------------------- requirements


def test_requirement_ids_in_the_spec_and_in_requirements_json_are_the_same():
    in_json = [entry["id"] for entry in REQUIREMENTS["requirements"]]
    assert len(in_json) == len(set(in_json)), "requirements.json lists an id twice"
    defined = defined_requirements()
    assert sorted(set(defined) - set(in_json)) == [], "in PROTOCOL.md, missing from requirements.json"
    assert sorted(set(in_json) - set(defined)) == [], "in requirements.json, not defined in PROTOCOL.md"


def test_every_id_mentioned_in_the_spec_is_defined():
    assert sorted(set(ANY_ID.findall(PROTOCOL_MD)) - set(defined_requirements())) == []


def test_every_must_and_should_line_carries_an_id_and_one_level():
    for line in prose_lines():
        keywords = set(KEYWORD.findall(line))
        if not keywords or "BCP 14" in line:
            continue
        assert REQUIREMENT_LINE.match(line), f"a MUST/SHOULD without a requirement id: {line[:100]}"
        assert len(keywords) == 1, f"split MUST and SHOULD into two requirements: {line[:100]}"


def test_requirements_json_entries_agree_with_the_spec():
    defined = defined_requirements()
    for entry in REQUIREMENTS["requirements"]:
        rid = entry["id"]
        assert entry["area"] == rid.split("-")[1]
        assert entry["level"] == KEYWORD.search(defined[rid]).group(1), rid
        assert entry["party"] in ("server", "client", "both"), rid
        assert entry["summary"] and "\n" not in entry["summary"], rid
        assert isinstance(entry["testable"], bool), rid
        assert bool(entry.get("reason")) is (not entry["testable"]), f"{rid}: a reason exactly when untestable"


def test_requirement_numbers_run_from_one_without_gaps_per_area():
    numbers: dict[str, list[int]] = {}
    for rid in defined_requirements():
        _, area, number = rid.split("-")
        numbers.setdefault(area, []).append(int(number))
    for area, found in numbers.items():
        assert sorted(found) == list(range(1, len(found) + 1)), area


def test_requirements_json_names_this_version():
    assert REQUIREMENTS["version"] in PROTOCOL_MD.splitlines()[0]
    assert (SPEC / REQUIREMENTS["spec"]).is_file()


# ----------------------------------------------------------------------------- examples


EXAMPLES = json_examples()


def test_every_message_type_has_an_example():
    assert sorted({json.loads(text)["type"] for text in EXAMPLES}) == sorted(MESSAGE_TYPES)


@pytest.mark.parametrize("text", EXAMPLES, ids=lambda text: json.loads(text)["type"])
def test_each_example_validates_against_its_schema_and_decodes_to_its_model(text):
    example = json.loads(text)
    schema = json.loads((SPEC / "schemas" / f"{example['type']}.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(example)
    message = Codec(Encoding.JSON).decode(text)
    assert type(message) is MESSAGE_TYPES[example["type"]]
    # Nothing in the example is ignored as unknown: it re-encodes to the same content.
    assert json.loads(Codec(Encoding.JSON).encode(message)) == example


# ----------------------------------------------------------------------------- error table


def test_the_error_table_in_the_spec_is_the_codes_table():
    table = PROTOCOL_MD.split("<!-- error-table:start -->")[1].split("<!-- error-table:end -->")[0]
    rows = [line.strip("|").split("|") for line in table.strip().splitlines()[2:]]
    parsed = [
        {"code": int(code), "name": name.strip(), "retryable": retryable.strip() == "yes", "meaning": meaning.strip()}
        for code, name, retryable, meaning in rows
    ]
    assert parsed == error_table()


def test_gymwire_spec_prints_where_the_spec_is_and_every_error_code(capsys):
    from gymwire.sdk.cli import main

    assert main(["spec"]) == 0
    printed = capsys.readouterr().out
    assert str(SPEC / "PROTOCOL.md") in printed
    for row in error_table():
        assert re.search(rf"^\s+{row['code']} {row['name']}\s", printed, re.M), row["name"]


def _validator(message_type: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SPEC / "schemas" / f"{message_type}.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


VALIDATORS = {name: _validator(name) for name in MESSAGE_TYPES}


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(MESSAGE_TYPES)), st.data())
def test_the_schemas_accept_every_frame_the_codec_accepts(message_type, data):
    """The schemas are never stricter than the implementation (they may be laxer: e.g. they cannot
    say that `split` and `index` go together)."""
    wire = json.loads(Codec(Encoding.JSON).encode(SAMPLES[message_type]))
    field = data.draw(st.sampled_from(sorted(wire)))
    replacement = data.draw(st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.just({}) | st.just([]))
    if field != "type":
        wire[field] = replacement
    frame = json.dumps(wire)
    try:
        Codec(Encoding.JSON).decode(frame)
    except ProtocolError:
        return
    VALIDATORS[message_type].validate(wire)


@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
def test_every_fully_populated_message_validates_against_its_schema(message_type):
    VALIDATORS[message_type].validate(json.loads(Codec(Encoding.JSON).encode(SAMPLES[message_type])))
