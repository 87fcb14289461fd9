"""The gym fleet on a real three-node Ray cluster (tests/fleet/ray_cluster.py): placement by
resources and labels, a pool that follows the fleet, a replica killed mid-run, scale up and down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ray_cluster import NODE_ADDRESSES, ray_cluster

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient, ServerLost
from gymwire.sdk.fleet import Fleet, FleetError, FleetSpec, ReplicaGroup



@pytest.fixture(scope="module")
def cluster():
    with ray_cluster() as running:
        yield running


def host_of(url: str) -> str:
    return url.split("//")[1].rsplit(":", 1)[0]


async def wait_for(condition, timeout: float = 90.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(every)


def test_placement_follows_resources_labels_and_per_node(cluster):
    spec = FleetSpec(
        name="placement",
        groups=(
            ReplicaGroup("everywhere", envs=("guess",), per_node=1, num_cpus=0.5),
            ReplicaGroup("browsers", envs=("guess",), replicas=2, num_cpus=0.5, resources={"browser": 1}),
            ReplicaGroup(  # an environment entry as a serve file has it: served under another name
                "labelled", envs=({"env": "guess", "name": "numbers"},), replicas=1, num_cpus=0.5, labels={"gymwire-test": "worker"}
            ),
        ),
    )
    fleet = Fleet.up(spec, wait_s=180)
    try:
        hosts = {group: sorted(host_of(url) for url in fleet.urls(group)) for group in ("everywhere", "browsers", "labelled")}
        assert hosts == {
            "everywhere": sorted(NODE_ADDRESSES),  # one on every node
            "browsers": [NODE_ADDRESSES[2]] * 2,  # only that node offers `browser`
            "labelled": [NODE_ADDRESSES[1]],
        }
        async def served_names() -> list[str]:
            async with GymClient(fleet.urls("labelled")[0], token=fleet.token) as client:
                return [info.name for info in await client.list_envs()]

        assert asyncio.run(served_names()) == ["numbers"]
        with pytest.raises(FleetError, match="already up"):
            Fleet.up(spec)
        with pytest.raises(FleetError, match="no group 'nope'"):
            fleet.scale("nope", 2)
    finally:
        fleet.down(drain_timeout_s=0)
    with pytest.raises(FleetError, match="no fleet named 'placement'"):
        Fleet.get("placement")


def test_a_group_that_cannot_serve_is_one_clear_error_and_leaves_nothing_up(cluster):
    spec = FleetSpec(name="broken", groups=(ReplicaGroup("bad", envs=("no_such_module:Env",), num_cpus=0.5),))
    with pytest.raises(FleetError, match="replica bad-1 cannot serve: .*no_such_module"):
        Fleet.up(spec, wait_s=120)
    with pytest.raises(FleetError, match="no fleet named 'broken'"):
        Fleet.get("broken")


async def test_a_pool_follows_the_fleet_through_a_crash_and_a_scale_up(cluster):
    fleet = Fleet.up(FleetSpec(name="follow", groups=(ReplicaGroup("guess", envs=("guess",), per_node=1, num_cpus=0.5),)), wait_s=180)
    try:
        urls = fleet.urls()
        # Auth is on by default: without the token the replica refuses.
        with pytest.raises(ProtocolError) as refused:
            await GymClient(urls[0], reconnect_attempts=0).connect()
        assert refused.value.code is ErrorCode.UNAUTHORIZED
        async with Fleet.get("follow").pool(refresh_s=0.5) as pool:
            sessions = await asyncio.gather(*(pool.open("guess", split="test", index=i) for i in range(30)))
            assert {host_of(s.client.url) for s in sessions} == set(NODE_ADDRESSES)  # spread over the nodes
            victim_row = next(row for row in fleet.endpoints() if row["url"] == sessions[0].client.url)
            on_victim = [s for s in sessions if s.client.url == victim_row["url"]]
            others = [s for s in sessions if s.client.url != victim_row["url"]]
            killed_at = time.monotonic()
            os.kill(victim_row["pid"], signal.SIGKILL)  # a replica crashes mid-run
            results = await asyncio.gather(*(s.step("50") for s in on_victim), return_exceptions=True)
            noticed_after = time.monotonic() - killed_at
            assert all(isinstance(r, ServerLost) for r in results), results
            assert noticed_after < 10, noticed_after  # before: ~19 s of reconnect back-off
            print(f"\nsessions of the killed replica failed {noticed_after:.2f} s after the kill")
            for session in others:  # the others play on
                assert (await session.step("50")).observation.text
            opened = await asyncio.gather(*(pool.open("guess", split="test", index=i) for i in range(12)))
            assert victim_row["url"] not in {s.client.url for s in opened}
            # Ray restarts the replica on a new port; the fleet lists it and the pool uses it again.
            await wait_for(lambda: len(pool.urls) == 3 and victim_row["url"] not in pool.urls)
            restarted = next(row for row in fleet.endpoints() if row["replica"] == victim_row["replica"])
            assert restarted["restarts"] == 1 and host_of(restarted["url"]) == host_of(victim_row["url"])
            fresh = await asyncio.gather(*(pool.open("guess", split="test", index=i) for i in range(12)))
            assert restarted["url"] in {s.client.url for s in fresh}
            # A scale-up without a restart: two replicas per node, and the pool follows.
            fleet.scale("guess", 2)
            await wait_for(lambda: len(pool.urls) == 6)
            added = set(pool.urls) - {s.client.url for s in [*sessions, *opened, *fresh]}
            new = await asyncio.gather(*(pool.open("guess", split="test", index=i) for i in range(12)))
            assert added <= {s.client.url for s in new}
            # And down again: the replicas that go drain first; sessions elsewhere are untouched.
            fleet.scale("guess", 1)
            await wait_for(lambda: len(pool.urls) == 3)
            for session in fresh[:3]:
                if session.client.url in pool.urls:
                    assert (await session.step("50")).observation.text
    finally:
        fleet.down(drain_timeout_s=0)


def gymwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gymwire.sdk.cli", "fleet", *args], capture_output=True, text=True, timeout=240)


def test_the_command_line_brings_a_fleet_up_lists_scales_and_takes_it_down(cluster, tmp_path):
    address = cluster.address
    spec = tmp_path / "fleet.yaml"
    spec.write_text("name: cli\ngroups:\n  - name: games\n    envs: [guess]\n    replicas: 2\n    num_cpus: 0.5\n")
    up = gymwire("up", str(spec), "--address", address)
    assert up.returncode == 0, up.stderr
    assert "fleet 'cli' (games: guess x 2; auth on)" in up.stdout and up.stdout.count(" up ") == 2
    fleet = Fleet.get("cli")
    token = gymwire("token", "--name", "cli", "--address", address)
    assert token.stdout.strip() == fleet.token and len(fleet.token) > 20
    assert gymwire("scale", "games", "3", "--name", "cli", "--address", address).returncode == 0
    fleet.wait_ready(120)
    listed = json.loads(gymwire("ls", "--name", "cli", "--address", address, "--json").stdout)
    assert [row["state"] for row in listed["replicas"]] == ["up"] * 3
    bad = gymwire("scale", "nope", "3", "--name", "cli", "--address", address)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no group 'nope'" in bad.stderr
    down = gymwire("down", "--name", "cli", "--address", address, "--drain", "0")
    assert down.returncode == 0 and "fleet 'cli' is down" in down.stdout
    gone = gymwire("ls", "--name", "cli", "--address", address)
    assert gone.returncode == 2 and "no fleet named 'cli'" in gone.stderr


async def test_the_openrlhf_launch_brings_the_fleet_up_in_the_trainers_cluster_and_agents_follow_it(cluster, tmp_path):
    from gymwire.trainers.openrlhf.agent import AgentSettings
    from gymwire.trainers.openrlhf.launch import LaunchConfig, build_command, gym_token
    from gymwire.trainers.openrlhf.pool import pool_for_running_loop
    from gymwire.trainers.openrlhf.train import fleet_up, worker_env

    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text('name = "rlhf"\n[[groups]]\nname = "guess"\nenvs = ["guess"]\nper_node = 1\nnum_cpus = 0.5\n')
    config = LaunchConfig.from_mapping({"model": "/m", "dataset": "/d.jsonl", "gym": {"fleet": str(fleet_file)}})
    token = gym_token(config)
    _, env = build_command(config, [], token)
    assert env["GYMWIRE_FLEET"] == "rlhf" and env["GYMWIRE_FLEET_FILE"] == str(fleet_file) and "GYMWIRE_URLS" not in env
    fleet = fleet_up(env)  # what train.py does once Ray is initialised
    try:
        assert fleet.token == token
        settings = AgentSettings.from_env(worker_env(env))  # what a vLLM actor reads
        pool = pool_for_running_loop(settings)
        sessions = await asyncio.gather(*(pool.open("guess", split="test", index=i) for i in range(6)))
        assert {host_of(s.client.url) for s in sessions} == set(NODE_ADDRESSES)
        await pool.close()
    finally:
        fleet.down(drain_timeout_s=0)
