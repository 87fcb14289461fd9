"""Fleet files: what they may say, and the one-line errors of what they may not (no Ray needed)."""

from __future__ import annotations

import pickle

import pytest

from gymwire.sdk.cli import main
from gymwire.sdk.fleet import FleetSpec, FleetSpecError, ReplicaGroup, load_fleet_spec


def test_a_yaml_file_with_every_key_loads_and_pickles(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "name: big\nauth: false\ngroups:\n"
        "  - {name: games, envs: [guess, textcraft], replicas: 3}\n"
        "  - {name: web, envs: miniwob, per_node: 2, num_cpus: 2, memory_mb: 512, resources: {browser: 1},\n"
        "     labels: {host: b}, isolation: process, limits: {max_sessions: 50}}\n"
    )
    spec = load_fleet_spec(path)
    assert spec.name == "big" and not spec.auth
    web = spec.group("web")
    assert web.envs == ("miniwob",) and web.per_node == 2 and web.server_limits().max_sessions == 50
    assert pickle.loads(pickle.dumps(spec)) == spec  # the manager actor gets it through Ray
    assert web.scaled(5).per_node == 5 and spec.group("games").scaled(7).replicas == 7


def test_environment_entries_resolve_to_env_specs_as_a_serve_file_has_them(tmp_path):
    from gymwire.sdk.fleet.spec import env_specs

    path = tmp_path / "fleet.toml"
    path.write_text('[[groups]]\nname = "g"\nenvs = ["guess", {env = "guess", name = "numbers"}]\n')
    specs = env_specs(load_fleet_spec(path).groups[0])
    assert [spec.name for spec in specs] == ["guess", "numbers"]
    assert {spec.entry_point for spec in specs} == {"gymwire.servers.guess.env:GuessEnv"}


@pytest.mark.parametrize(
    "text, error",
    [
        ("groups: []", "at least one group"),
        ("groups: [{name: a}]", "`envs` must list"),
        ("groups: [{name: a, envs: [{env: guess, kwarg: {}}]}]", "unknown key 'kwarg' in an envs entry"),
        ("groups: [{name: a, envs: [{name: x}]}]", "a mapping with `env`"),
        ("groups: [{name: a, envs: [g], replicas: -2}]", "replicas must be a whole number >= 0"),
        ("groups: [{name: a, envs: [g], isolation: vm}]", "isolation must be one of"),
        ("groups: [{name: a, envs: [g], resources: {CPU: 2}}]", "resources are custom ones"),
        ("groups: [{name: a, envs: [g], limits: {max_sessions: 0}}]", "max_sessions"),
        ("groups: [{name: a, envs: [g], limits: {max_sesions: 5}}]", "unknown limit(s) ['max_sesions']"),
        ("groups: [{name: a, envs: [g], replica: 2}]", "unknown key(s) ['replica']"),
        ("groups: [{name: a, envs: [g]}, {name: a, envs: [g]}]", "group names must differ"),
        ("name: 'no spaces'\ngroups: [{name: a, envs: [g]}]", "fleet name"),
        ("groups: [", "does not parse"),
    ],
)
def test_a_bad_fleet_file_says_which_key_to_fix(tmp_path, text, error):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetSpecError) as raised:
        load_fleet_spec(path)
    assert error in str(raised.value)


def test_toml_and_json_files_load_too(tmp_path):
    (tmp_path / "f.toml").write_text('[[groups]]\nname = "a"\nenvs = ["guess"]\nreplicas = 2\n')
    (tmp_path / "f.json").write_text('{"groups": [{"name": "a", "envs": ["guess"], "replicas": 2}]}')
    expected = FleetSpec(groups=(ReplicaGroup("a", envs=("guess",), replicas=2),))
    assert load_fleet_spec(tmp_path / "f.toml") == load_fleet_spec(tmp_path / "f.json") == expected


def test_the_command_line_reports_a_bad_file_or_flag_in_one_line_before_touching_ray(tmp_path, capsys):
    assert main(["fleet", "up", str(tmp_path / "missing.yaml")]) == 2
    assert main(["fleet", "up", "guess", "--replicas", "2", "--per-node", "1"]) == 2
    assert main(["fleet", "up", "guess", "--resource", "browser"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(line.startswith("gymwire fleet: ") for line in errors)
    assert "cannot read the fleet file" in errors[0] and "not both" in errors[1] and "KEY=VALUE" in errors[2]
