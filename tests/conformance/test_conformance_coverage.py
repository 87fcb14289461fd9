"""Every MUST of spec/requirements.json is covered by a check or listed as not checkable, with a reason."""

import json
from pathlib import Path

from gymwire.sdk.conformance import CHECKS, NOT_CHECKED

SPEC = Path(__file__).resolve().parents[2] / "spec" / "requirements.json"


def _requirements():
    return {r["id"]: r for r in json.loads(SPEC.read_text())["requirements"]}


def test_every_must_is_checked_or_explained():
    requirements = _requirements()
    covered = {i for c in CHECKS for i in c.requirements}
    musts = {i for i, r in requirements.items() if r["level"] == "MUST"}
    missing = sorted(musts - covered - set(NOT_CHECKED))
    assert not missing, f"MUST requirements neither checked nor listed in NOT_CHECKED: {missing}"
    assert all(reason.strip() for reason in NOT_CHECKED.values())


def test_ids_exist_in_the_spec():
    requirements = _requirements()
    named = {i for c in CHECKS for i in c.requirements} | set(NOT_CHECKED)
    assert not named - set(requirements), f"ids not in spec/requirements.json: {sorted(named - set(requirements))}"


def test_not_checked_does_not_list_checked_requirements():
    covered = {i for c in CHECKS for i in c.requirements}
    assert not covered & set(NOT_CHECKED), sorted(covered & set(NOT_CHECKED))


def test_untestable_musts_of_the_spec_are_not_claimed_as_checked():
    requirements = _requirements()
    covered = {i for c in CHECKS for i in c.requirements}
    untestable = {i for i, r in requirements.items() if r["level"] == "MUST" and not r["testable"]}
    assert not covered & untestable, f"checks claim requirements the spec calls untestable: {sorted(covered & untestable)}"
    assert untestable <= set(NOT_CHECKED)


def test_checks_have_unique_names_and_valid_areas():
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    requirements = _requirements()
    for check in CHECKS:
        assert check.requirements, f"{check.name} covers no requirement"
        assert check.summary and check.summary != check.name, f"{check.name} has no docstring"
        assert check.level in ("core", "full")
        assert check.area in {requirements[i]["area"] for i in requirements}


def test_conformance_doc_lists_every_check_and_every_unchecked_must():
    doc = (SPEC.parent / "CONFORMANCE.md").read_text()
    table = doc.split("<!-- checks:start -->", 1)[1].split("<!-- checks:end -->", 1)[0]
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert documented == {c.name for c in CHECKS}
    unchecked_section = doc.split("## What the suite does not check", 1)[1]
    assert all(requirement in unchecked_section for requirement in NOT_CHECKED)
