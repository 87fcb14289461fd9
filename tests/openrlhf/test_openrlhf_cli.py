"""`gymwire openrlhf prepare` and `gymwire openrlhf launch`."""

import json
import shlex
import sys
from pathlib import Path

import pytest
from openrlhf_fakes import GUESS_FIRST_OBSERVATION

from gymwire.sdk.cli import main
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.openrlhf import train
from gymwire.trainers.openrlhf.dataset import read_rows
from gymwire.trainers.episode import EnvTask
from gymwire.trainers.play import first_message
from gymwire.trainers.openrlhf import launch as launch_module
from gymwire.trainers.openrlhf.launch import LaunchConfig, LaunchConfigError, build_command, check_command


def test_prepare_with_an_embedded_server(tmp_path, capsys):
    out = tmp_path / "data" / "tasks.jsonl"
    assert main(["openrlhf", "prepare", "guess", "--split", "test", "--start", "95", "--out", str(out)]) == 0
    rows = read_rows(out)
    assert [EnvTask.parse(r["label"]) for r in rows] == [EnvTask("guess", "test", i) for i in range(95, 100)]
    assert {r["prompt"] for r in rows} == {first_message(GuessEnv.info().instructions, GUESS_FIRST_OBSERVATION)}
    assert "wrote 5 tasks" in capsys.readouterr().err


def test_prepare_from_a_running_server(tmp_path):
    out = tmp_path / "tasks.jsonl"
    with GymServer([GuessEnv], port=0, token="s3cret").run_in_thread() as url:
        code = main(["openrlhf", "prepare", "guess", "--url", url, "--token", "s3cret", "--limit", "150", "--out", str(out)])
    assert code == 0
    rows = read_rows(out)
    assert len(rows) == 150 and EnvTask.parse(rows[-1]["label"]) == EnvTask("guess", "train", 149)


@pytest.mark.parametrize(
    "args, message",
    [
        (["guess", "--split", "dev"], "no split 'dev'; its splits are ['test', 'train']"),
        (["guess", "--split", "test", "--start", "100"], "no tasks in guess/test from index 100"),
        (["nosuchenv"], "unknown environment 'nosuchenv'"),
    ],
)
def test_prepare_errors_say_what_exists(args, message, tmp_path, capsys):
    assert main(["openrlhf", "prepare", *args, "--out", str(tmp_path / "x.jsonl")]) == 2
    assert message in capsys.readouterr().err


def base_config(**overrides):
    config = {
        "model": "/models/qwen",
        "dataset": "tasks.jsonl",
        "gpus_per_node": 4,
        "vllm_engines": 2,
        "gym": {"urls": ["ws://10.0.0.5:8765", "ws://10.0.0.6:8765"], "token": "s3cret-token-value"},
        "estimator": "group_norm",
        "horizon": {"kind": "staged", "stages": [6, 13, 20], "stage_steps": 100},
        "budget": {"max_len": 8192, "turn_tokens": 256},
        "rollout": {"batch_size": 32, "n_samples_per_prompt": 8},
        "checkpoints": {"path": "/ckpt", "save_steps": 10, "resume": True},
        "extra_args": ["--actor.adam.lr", "1e-6"],
    }
    config.update(overrides)
    return config


def flag(argv, name):
    return argv[argv.index(name) + 1]


def test_launch_dry_run_prints_environment_and_openrlhf_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tasks.jsonl").write_text("")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(base_config()))
    assert main(["openrlhf", "launch", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    exports = dict(line[len("export "):].split("=", 1) for line in printed.splitlines() if line.startswith("export "))
    assert exports == {
        "GYMWIRE_URLS": "ws://10.0.0.5:8765,ws://10.0.0.6:8765",
        "GYMWIRE_HORIZON": "staged:6,13,20@100",
        "GYMWIRE_STEP_SOURCE": "ray:gymwire-step",
    }
    assert "s3cret-token-value" not in printed and "# GYMWIRE_TOKEN is set (not shown)" in printed
    command = printed.split("\n", len(exports) + 1)[-1]
    argv = shlex.split(command.replace("\\\n", " "))
    assert "--data.max_len 8192 \\\n" in printed  # one flag and its value per line
    assert argv[1:3] == ["-m", "gymwire.trainers.openrlhf.train"]
    # Named, not located: train.py ships it to the Ray workers; paths the workers read are absolute.
    assert flag(argv, "--train.agent_func_path") == "agent_func.py"
    assert flag(argv, "--data.prompt_dataset") == str(tmp_path / "tasks.jsonl")
    assert flag(argv, "--ckpt.output_dir") == str(tmp_path / "ckpt")
    assert flag(argv, "--data.max_len") == "8192" and flag(argv, "--rollout.max_new_tokens") == "256"
    assert flag(argv, "--algo.advantage.estimator") == "group_norm"
    assert flag(argv, "--rollout.n_samples_per_prompt") == "8"
    assert flag(argv, "--actor.num_gpus_per_node") == flag(argv, "--ref.num_gpus_per_node") == "4"
    assert "--ckpt.load_enable" in argv and flag(argv, "--ckpt.path") == "/ckpt"
    assert flag(argv, "--actor.adam.lr") == "1e-6"
    assert "--critic.num_gpus_per_node" not in argv and "--data.apply_chat_template" not in argv


def test_paths_workers_read_or_write_are_absolute_and_hub_names_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mine").mkdir(parents=True)
    config = LaunchConfig.from_mapping(base_config(
        model="models/mine", dataset="tasks.jsonl", checkpoints={"path": "ckpt/run"},
        extra_args=["--logger.tensorboard_dir", "logs/tb", "--ckpt.output_dir", "out", "--eval.dataset", "org/evalset"],
    ))
    argv, _ = build_command(config, ["ws://h:1"])
    assert flag(argv, "--actor.model_name_or_path") == str(tmp_path / "models" / "mine")
    assert flag(argv, "--data.prompt_dataset") == str(tmp_path / "tasks.jsonl")
    assert flag(argv, "--ckpt.path") == str(tmp_path / "ckpt" / "run")
    assert flag(argv, "--logger.tensorboard_dir") == str(tmp_path / "logs" / "tb")
    assert flag(argv, "--ckpt.output_dir") == str(tmp_path / "out")
    assert flag(argv, "--eval.dataset") == "org/evalset"  # a Hub name
    hub = LaunchConfig.from_mapping(base_config(model="Qwen/Qwen2.5-1.5B-Instruct"))
    assert flag(build_command(hub, ["ws://h:1"])[0], "--actor.model_name_or_path") == "Qwen/Qwen2.5-1.5B-Instruct"


def test_launch_gae_gets_a_critic_and_multiturn_gets_the_template(tmp_path):
    config = LaunchConfig.from_mapping(base_config(estimator="gae", agent="multiturn"))
    argv, env = build_command(config, ["ws://h:1"])
    assert flag(argv, "--critic.num_gpus_per_node") == "4"
    assert flag(argv, "--train.agent_func_path") == "agent_func_multiturn.py"
    assert "--data.apply_chat_template" in argv and env["GYMWIRE_TOKENIZER"] == "/models/qwen"


def test_launch_warns_when_the_budget_is_below_the_last_stage():
    config = LaunchConfig.from_mapping(base_config(budget={"max_len": 2048, "turn_tokens": 256}))
    assert "20 turns x 256 tokens" in config.warnings()[0]
    assert LaunchConfig.from_mapping(base_config()).warnings() == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": ""}, "needs `model`"),
        ({"estimator": "ppo"}, "not one of"),
        ({"rollout": {"n_samples_per_prompt": 1}}, "n_samples_per_prompt >= 2"),
        ({"gym": {}}, "exactly one of `urls`"),
        ({"gym": {"urls": ["ws://a:1"], "embedded": ["guess"]}}, "exactly one of `urls`"),
        ({"extra_args": ["--train.async_enable"]}, "synchronous trainer"),
        ({"agent": "chat"}, "agent 'chat'"),
        ({"epochs": 3}, "unknown config key(s) ['epochs']"),
        ({"budget": {"turn_tokens": 5}}, "budget.max_len"),
    ],
)
def test_launch_config_errors_name_the_key(overrides, message):
    with pytest.raises(LaunchConfigError) as info:
        LaunchConfig.from_mapping(base_config(**overrides))
    assert message in str(info.value)


def test_launch_reports_a_bad_horizon(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ndataset: d\ngym: {embedded: [guess]}\nhorizon: 'staged:1,2'\n")
    assert main(["openrlhf", "launch", str(path), "--dry-run"]) == 2
    assert "cannot read horizon 'staged:1,2'" in capsys.readouterr().err


def test_train_entry_refuses_async_and_missing_servers(monkeypatch, capsys):
    monkeypatch.setenv("GYMWIRE_URLS", "ws://a:1")
    assert train.main(["--train.async_enable"]) == 2
    assert "not supported" in capsys.readouterr().err
    monkeypatch.delenv("GYMWIRE_URLS")
    assert train.main([]) == 2
    assert "GYMWIRE_URLS" in capsys.readouterr().err


def test_worker_env_carries_gymwire_settings_and_openrlhf_defaults():
    env = train.worker_env({"GYMWIRE_URLS": "ws://a:1", "GYMWIRE_HORIZON": "fixed:5", "NCCL_DEBUG": "INFO", "HOME": "/x"})
    assert env == {
        "GYMWIRE_URLS": "ws://a:1", "GYMWIRE_HORIZON": "fixed:5",
        "TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "INFO", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
    }


def test_launch_serves_embedded_envs_for_the_run_and_stops_them(tmp_path, monkeypatch):
    import socket

    from gymwire.sdk.sync import SyncGymClient
    from gymwire.trainers.openrlhf import launch as launch_module

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("GYMWIRE_TOKEN", raising=False)
    monkeypatch.setattr(launch_module.importlib.util, "find_spec", lambda name: object())  # as if ray were installed
    (tmp_path / "tasks.jsonl").write_text("")
    config = LaunchConfig.from_mapping(base_config(
        dataset=str(tmp_path / "tasks.jsonl"), gym={"embedded": ["guess"], "host": "127.0.0.1", "port": port},
    ))
    seen = {}

    def fake_call(argv, env):
        from gymwire.protocol import ProtocolError

        seen["argv"], seen["urls"], seen["token"] = argv, env["GYMWIRE_URLS"], env.get("GYMWIRE_TOKEN")
        with pytest.raises(ProtocolError):  # the embedded server wants the token the workers get
            SyncGymClient(env["GYMWIRE_URLS"]).__enter__()
        with SyncGymClient(env["GYMWIRE_URLS"], token=env["GYMWIRE_TOKEN"]) as client:
            seen["envs"] = [info.name for info in client.list_envs()]
        return 7

    monkeypatch.setattr(launch_module.subprocess, "call", fake_call)
    assert launch_module.launch(config) == 7
    assert seen["envs"] == ["guess"] and seen["urls"] == f"ws://127.0.0.1:{port}" and len(seen["token"]) >= 24
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_prepare_a_users_own_class_writes_labels_its_server_accepts(tmp_path, monkeypatch):
    (tmp_path / "mywordle.py").write_text(
        "from gymwire.servers.guess import GuessEnv\n\nclass Wordle(GuessEnv):\n    name = 'wordle'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "tasks.jsonl"
    assert main(["openrlhf", "prepare", "mywordle:Wordle", "--split", "test", "--limit", "3", "--out", str(out)]) == 0
    labels = [EnvTask.parse(row["label"]) for row in read_rows(out)]
    assert labels == [EnvTask("wordle", "test", i) for i in range(3)]
    from mywordle import Wordle

    from gymwire.sdk.sync import SyncGymClient

    with GymServer([Wordle], port=0).run_in_thread() as url, SyncGymClient(url) as client:  # as `gymwire serve mywordle:Wordle`
        for label in labels:
            session = client.open(label.env, split=label.split, index=label.index)
            session.close()


REPO = Path(__file__).resolve().parents[2]


def test_launch_checks_the_command_with_openrlhfs_own_parser(tmp_path, capsys):
    (tmp_path / "tasks.jsonl").write_text("")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(base_config(dataset=str(tmp_path / "tasks.jsonl"), extra_args=["--actor.learning_rate", "1e-6"])))
    assert main(["openrlhf", "launch", str(path), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unrecognized arguments: --actor.learning_rate 1e-6" in error
    # openrlhf's own checks after parsing run too.
    config = LaunchConfig.from_mapping(base_config(extra_args=["--algo.dynamic_filtering_enable",
                                                               "--algo.dynamic_filtering_range", "1", "0"]))
    with pytest.raises(LaunchConfigError, match="reward_clip_range"):
        check_command(build_command(config, ["ws://h:1"])[0])


def yaml_blocks(markdown: str) -> list[str]:
    return [block.split("```", 1)[0] for block in markdown.split("```yaml\n")[1:]]


def test_the_shipped_and_documented_configs_pass_openrlhfs_parser():
    import yaml

    configs = [yaml.safe_load((REPO / "examples" / "openrlhf-textcraft.yaml").read_text())]
    configs += [yaml.safe_load(block) for block in yaml_blocks((REPO / "docs" / "openrlhf.md").read_text())]
    described = yaml.safe_load(launch_module.__doc__.split("A config (YAML or JSON):\n")[1].split("\n\n")[0])
    del described["gym"]["embedded"], described["gym"]["fleet"]  # the module's description lists every alternative
    configs.append(described)
    assert len(configs) == 3
    for raw in configs:
        config = LaunchConfig.from_mapping(raw)
        urls = ["ws://10.0.0.4:8765"]
        argv, _ = build_command(config, urls, token="t")
        check_command(argv)  # raises on a refusal
        assert "--actor.adam.lr" in argv


def test_launch_refuses_a_missing_dataset_before_starting_anything(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(base_config(dataset=str(tmp_path / "nothere.jsonl"))))
    assert main(["openrlhf", "launch", str(path), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nothere.jsonl does not exist" in error and "openrlhf prepare" in error


def test_launch_and_train_without_ray_say_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as on a machine without ray
    (tmp_path / "tasks.jsonl").write_text("")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(base_config(dataset=str(tmp_path / "tasks.jsonl"))))
    assert main(["openrlhf", "launch", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install 'openrlhf[vllm]==0.11.2'" in error
    monkeypatch.setenv("GYMWIRE_URLS", "ws://a:1")
    assert train.main(["--actor.model_name_or_path", "m"]) == 2
    assert "pip install 'openrlhf[vllm]==0.11.2'" in capsys.readouterr().err


def test_an_embedded_server_on_loopback_is_refused_for_several_nodes():
    config = LaunchConfig.from_mapping(base_config(nodes=2, gym={"embedded": ["guess"], "host": "127.0.0.1"}))
    with pytest.raises(LaunchConfigError, match="loopback, which the other 1 node"):
        launch_module.embedded_urls(config)
    single = LaunchConfig.from_mapping(base_config(gym={"embedded": ["guess"]}))
    assert launch_module.embedded_urls(single) == [f"ws://{launch_module.node_address()}:8765"]


def test_the_agent_files_reach_ray_workers_as_the_jobs_working_directory():
    env = train.runtime_env(["--train.agent_func_path", "agent_func.py"], {"GYMWIRE_URLS": "ws://a:1"})
    folder = Path(env["working_dir"])
    assert sorted(p.name for p in folder.iterdir()) == ["agent_func.py", "agent_func_multiturn.py"]
    assert env["env_vars"]["GYMWIRE_URLS"] == "ws://a:1"
    assert "working_dir" not in train.runtime_env(["--train.agent_func_path", "/opt/mine.py"], {})


def test_a_fleet_file_is_checked_before_anything_starts_and_named_to_the_agents(tmp_path):
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text("name: gyms\ngroups:\n  - {name: web, envs: [guess], replicas: 2}\n")
    config = LaunchConfig.from_mapping({"model": "/m", "dataset": "/d.jsonl", "gym": {"fleet": str(fleet_file)}})
    token = launch_module.gym_token(config)
    assert token and len(token) >= 24  # a fleet listens on addresses other machines reach: auth on
    _, env = build_command(config, [], token)
    assert env["GYMWIRE_FLEET"] == "gyms" and env["GYMWIRE_FLEET_FILE"] == str(fleet_file) and "GYMWIRE_URLS" not in env
    assert train.worker_env({**env, "GYMWIRE_TOKEN": token})["GYMWIRE_FLEET"] == "gyms"
    fleet_file.write_text("groups:\n  - {name: web, envs: [guess], replicas: -1}\n")
    with pytest.raises(LaunchConfigError, match="gym.fleet: group 'web': replicas must be"):
        LaunchConfig.from_mapping({"model": "/m", "dataset": "/d.jsonl", "gym": {"fleet": str(fleet_file)}})
    with pytest.raises(LaunchConfigError, match="exactly one of `urls`"):
        LaunchConfig.from_mapping({"model": "/m", "dataset": "/d.jsonl", "gym": {"fleet": str(fleet_file), "urls": ["ws://a:1"]}})
