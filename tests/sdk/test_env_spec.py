"""EnvSpec, the data that names a configured environment, and the ways `gymwire serve` is given
one: `NAME:key=value,...`, `module:Class:key=value`, a serve file (TOML or YAML), environment
variables as the serve command's defaults. Bad configuration is a one-line error naming the key
and the accepted ones."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gymwire.sdk import Environment, StepOutcome
from gymwire.sdk.client import GymClient
from gymwire.sdk.commands import serve_specs
from gymwire.sdk.env_spec import EnvSpec, EnvSpecError
from gymwire.sdk.registry import read_serve_file, resolve_env
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.servers.textcraft import TextCraftEnv


class Board(Environment):
    """A configurable environment: its splits depend on `size`."""

    name = "board"

    @classmethod
    def info(cls, size: int = 3):
        return super().info().model_copy(update={"splits": {"test": size}})

    def __init__(self, size: int = 3, label: str = "board", wrap: bool = False) -> None:
        self.size, self.label, self.wrap = size, label, wrap
        self.splits = {"test": size}

    def reset(self, task):
        _, index = self.task_index(task)
        return f"{self.label} {self.size} at {index} (wrap {self.wrap})"

    def step(self, action):
        return StepOutcome(action, terminated=True)


class Needy(Environment):
    name = "needy"

    def __init__(self, url: str, tries: int = 1) -> None:
        self.url = url


def write_recipes(directory: Path) -> Path:
    directory.mkdir()
    for name, (result, ingredient, count) in {"plank": ("toy:plank", "toy:log", 4), "stick": ("toy:stick", "toy:plank", 4)}.items():
        recipe = {"type": "minecraft:crafting_shapeless", "ingredients": [{"item": ingredient}], "result": {"item": result, "count": count}}
        (directory / f"{name}.json").write_text(json.dumps(recipe))
    return directory


# -- the spec ---------------------------------------------------------------------------------------


def test_a_spec_validates_converts_and_describes_as_configured():
    spec = EnvSpec.of(Board, size="5", wrap="true", name="big")
    assert spec.kwargs == {"size": 5, "wrap": True} and spec.name == "big"
    info = spec.info()
    assert (info.name, info.splits) == ("big", {"test": 5})
    env = spec.make()
    assert (env.size, env.wrap, env.splits) == (5, True, {"test": 5})
    assert EnvSpec.of(Board).info().splits == {"test": 3}


def test_a_spec_refuses_what_the_constructor_does_not_take():
    with pytest.raises(EnvSpecError, match=r"board has no option 'sise'; its options are size, label, wrap$"):
        EnvSpec.of(Board, sise=4)
    with pytest.raises(EnvSpecError, match=r"guess has no option 'low'; it takes no options$"):
        EnvSpec.of(GuessEnv, low=3)
    with pytest.raises(EnvSpecError, match=r"board option size='many': Input should be a valid integer"):
        EnvSpec.of(Board, size="many")
    with pytest.raises(EnvSpecError, match=r"needy needs the option url \(its options are url, tries\)"):
        EnvSpec.of(Needy)
    with pytest.raises(EnvSpecError, match="entry_point must be 'module:Class'"):
        EnvSpec("gymwire.servers.guess.GuessEnv")


def test_a_spec_pickles_as_data_and_rebuilds_its_class_by_path(tmp_path):
    spec = EnvSpec.of(TextCraftEnv, recipes_dir=str(write_recipes(tmp_path / "toy")), name="toycraft")
    state = pickle.dumps(spec)
    assert b"TextCraftEnv" in state and b"toycraft" in state
    again = pickle.loads(state)
    assert again == spec and again.env_class is TextCraftEnv
    assert again.info().splits == spec.info().splits and sum(again.make().splits.values()) == 2


# -- text and files -----------------------------------------------------------------------------------


def test_the_text_forms_of_serve(tmp_path, monkeypatch):
    toy = write_recipes(tmp_path / "toy")
    spec = resolve_env(f"textcraft:recipes_dir={toy},name=toycraft")
    assert (spec.entry_point, spec.kwargs, spec.name) == ("gymwire.servers.textcraft.env:TextCraftEnv", {"recipes_dir": str(toy)}, "toycraft")
    (tmp_path / "boards.py").write_text(
        "from gymwire.sdk import Environment\n"
        "class Board(Environment):\n"
        "    name = 'board'\n"
        "    def __init__(self, size: int = 3, sites: dict[str, str] | None = None):\n"
        "        self.size, self.sites = size, sites\n"
    )
    spec = resolve_env(f"{tmp_path / 'boards.py'}:Board:size=7,sites={{\"A\": \"http://h:1\", \"B\": \"http://h:2\"}}")
    assert spec.kwargs == {"size": 7, "sites": {"A": "http://h:1", "B": "http://h:2"}}
    monkeypatch.chdir(tmp_path)
    assert resolve_env("boards:Board").kwargs == {}
    assert resolve_env("boards:Board:size=2").make().size == 2
    assert resolve_env("guess").env_class is GuessEnv
    for text, message in [
        ("guess:low=3", "guess has no option 'low'; it takes no options"),
        ("textcraft:recipe_dir=x", "textcraft has no option 'recipe_dir'; its options are recipes_dir"),
        ("boards:Board:size=2,size=3", "option 'size' is given twice"),
        ("boards:Board:size=2,sites={oops", "option sites is not valid JSON"),
        ("boards:Board:size", "expected KEY=VALUE"),
    ]:
        with pytest.raises(ValueError, match=message):
            resolve_env(text)


def test_serve_files_in_toml_and_yaml(tmp_path):
    toy = write_recipes(tmp_path / "toy")
    toml = tmp_path / "gym.toml"
    toml.write_text(textwrap.dedent(f"""
        [[envs]]
        env = "guess"

        [[envs]]
        env = "textcraft"
        name = "toycraft"
        kwargs = {{ recipes_dir = "{toy}" }}
    """))
    yaml_file = tmp_path / "gym.yaml"
    yaml_file.write_text(f"envs:\n  - guess\n  - env: textcraft:recipes_dir={toy}\n    name: toycraft\n")
    for path in (toml, yaml_file):
        specs = read_serve_file(path)
        assert [(s.name, s.kwargs) for s in specs] == [("guess", {}), ("toycraft", {"recipes_dir": str(toy)})]
    bad = tmp_path / "bad.toml"
    for text, message in [
        ('[[envs]]\nenv = "textcraft"\nkwargs = { recipe_dir = "x" }\n', "envs entry 1: textcraft has no option 'recipe_dir'; its options are recipes_dir"),
        ('[[envs]]\nenv = "guess"\nkwarg = {}\n', "envs entry 1: unknown key 'kwarg'; an entry has env, name and kwargs"),
        ('[[env]]\nenv = "guess"\n', "lists its environments under `envs`"),
        ("envs = [", "not valid TOML"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_serve_file(bad)


def test_environment_variables_are_defaults_of_the_serve_command_only(tmp_path, monkeypatch):
    toy = write_recipes(tmp_path / "toy")
    monkeypatch.setenv("GYMWIRE_TEXTCRAFT_RECIPES", str(toy))
    monkeypatch.setenv("GYMWIRE_SCIWORLD_JVMS", "3")
    (from_variable,) = serve_specs(["textcraft"], None)
    assert from_variable.kwargs == {"recipes_dir": str(toy)} and sum(from_variable.info().splits.values()) == 2
    (given,) = serve_specs(["textcraft:recipes_dir=elsewhere"], None)
    assert given.kwargs == {"recipes_dir": "elsewhere"}  # what is given wins
    (sciworld,) = serve_specs(["sciworld"], None)
    assert sciworld.kwargs == {"jvms": 3}
    assert resolve_env("textcraft").kwargs == {} and TextCraftEnv().splits["test"] == 100  # Python code never reads them


def test_a_server_serves_each_name_once():
    with pytest.raises(ValueError, match="two environments are served as 'board'"):
        GymServer([EnvSpec.of(Board, size=2), Board], port=0)
    server = GymServer({"small": EnvSpec.of(Board, size=2), "plain": Board}, port=0)
    assert {name: info.splits for name, info in server.env_infos.items()} == {"small": {"test": 2}, "plain": {"test": 3}}


# -- the command line ---------------------------------------------------------------------------------


def gymwire(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gymwire.sdk.cli", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize(
    "args, message",
    [
        (["textcraft:recipe_dir=x"], "gymwire serve: textcraft has no option 'recipe_dir'; its options are recipes_dir"),
        (["sciworld:jvms=0"], "gymwire serve: sciworld option jvms='0': Input should be greater than 0"),
        ([], "gymwire serve: name at least one environment"),
        (["--config", "missing.toml"], "gymwire serve: cannot read serve file missing.toml"),
    ],
)
def test_bad_configuration_is_a_one_line_error(args, message, tmp_path):
    result = gymwire("serve", *args, "--port", "0", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), result.stderr


async def test_serve_plays_custom_recipes_in_a_process_per_session(tmp_path):
    toy = write_recipes(tmp_path / "toy")
    (tmp_path / "gym.toml").write_text('[[envs]]\nenv = "guess"\nname = "guess-too"\n')
    server = subprocess.Popen(
        [sys.executable, "-m", "gymwire.sdk.cli", "serve", f"textcraft:recipes_dir={toy}", "--config", "gym.toml",
         "--isolation", "process", "--port", "0"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        banner = next(line for line in server.stderr if line.startswith("gymwire: serving"))
        assert "serving guess-too, textcraft on ws://127.0.0.1:" in banner, banner
        url = "ws://" + banner.split("ws://")[1].split()[0]
        async with GymClient(url) as client:
            infos = {info.name: info for info in await client.list_envs()}
            assert sum(infos["textcraft"].splits.values()) == 2
            async with client.session("textcraft", split="train", index=0) as session:
                goal = session.observation.data["goal"]
                assert goal in {"plank", "stick"} and "toy" not in session.observation.text
                result = await session.step("Action: get 1 log")
                assert result.observation.text == "Got 1 log."
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        server.stderr.close()
