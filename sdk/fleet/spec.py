"""What a fleet runs, as data: replica groups, each a set of environments and where its replicas go.

    name: gymwire                  # the fleet's name in the Ray cluster (several may run)
    auth: true                     # a bearer token on every replica (default; false: none)
    groups:
      - name: games
        envs:                      # as `gymwire serve` and its serve file take them: a name or
          - guess                  #   module:Class (with inline options), or an entry with
          - env: textcraft         #   env, kwargs (the constructor's) and name (the served one)
            kwargs: {recipes_dir: /data/recipes}
            name: toycraft
        replicas: 4                # spread over the nodes that fit, or:
      - name: web
        envs: [miniwob]
        per_node: 2                # on every node that fits, and on nodes that join later
        num_cpus: 1                # Ray resources one replica holds
        memory_mb: 2048
        resources: {browser: 1}    # custom resources a node offers (`ray start --resources`)
        labels: {host: browser}    # node labels it needs (`ray start --labels`)
        isolation: process
        limits: {max_sessions: 2000}

Everything here is plain and picklable: the manager actor gets it, and each replica resolves its
environments to EnvSpecs on its own node (gymwire.sdk.registry.resolve_env), where their extras are.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from gymwire.protocol import Limits

from ..serving.startup import check_limits

__all__ = ["FleetSpec", "FleetSpecError", "ReplicaGroup", "load_fleet_spec"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ISOLATIONS = ("thread", "process")


class FleetSpecError(ValueError):
    """The fleet description is incomplete or inconsistent; the message says which key to fix."""


@dataclass(frozen=True)
class ReplicaGroup:
    name: str
    envs: tuple[str | Mapping[str, Any], ...]
    replicas: int = 1
    per_node: int | None = None
    num_cpus: float = 1.0
    memory_mb: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    isolation: str = "thread"
    limits: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "ReplicaGroup":
        where = f"group {raw.get('name', '?')!r}"
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise FleetSpecError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        envs = raw.get("envs")
        if isinstance(envs, (str, Mapping)):
            envs = [envs]
        if not envs or not isinstance(envs, list):
            raise FleetSpecError(f"{where}: `envs` must list environments (names, module:Class, or env/kwargs/name entries)")
        values = dict(raw, envs=tuple(_env_entry(env, where) for env in envs))
        for key in ("resources", "labels", "limits"):
            if not isinstance(values.get(key, {}), Mapping):
                raise FleetSpecError(f"{where}: `{key}` must be a mapping")
        try:
            group = cls(**values)
        except TypeError as exc:
            raise FleetSpecError(f"{where}: {exc}") from None
        group.validate()
        return group

    def validate(self) -> None:
        where = f"group {self.name!r}"
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise FleetSpecError(f"{where}: a name is letters, digits, '_', '.', '-' (at most 63)")
        if self.per_node is None:
            if not (isinstance(self.replicas, int) and self.replicas >= 0):
                raise FleetSpecError(f"{where}: replicas must be a whole number >= 0, got {self.replicas!r}")
        elif not (isinstance(self.per_node, int) and self.per_node >= 0):
            raise FleetSpecError(f"{where}: per_node must be a whole number >= 0, got {self.per_node!r}")
        if not (isinstance(self.num_cpus, (int, float)) and self.num_cpus >= 0):
            raise FleetSpecError(f"{where}: num_cpus must be >= 0, got {self.num_cpus!r}")
        if self.memory_mb is not None and not (isinstance(self.memory_mb, int) and self.memory_mb > 0):
            raise FleetSpecError(f"{where}: memory_mb must be a whole number > 0, got {self.memory_mb!r}")
        if self.isolation not in ISOLATIONS:
            raise FleetSpecError(f"{where}: isolation must be one of {ISOLATIONS}, got {self.isolation!r}")
        for resource, amount in self.resources.items():
            if resource in ("CPU", "GPU", "memory") or not (isinstance(amount, (int, float)) and amount > 0):
                raise FleetSpecError(f"{where}: resources are custom ones with amounts > 0 (CPU: num_cpus, memory: memory_mb)")
        limits = self.server_limits()  # FleetSpecError naming the group
        try:
            check_limits(limits)
        except ValueError as exc:
            raise FleetSpecError(f"{where}: {exc}") from None

    def server_limits(self) -> Limits:
        unknown = set(self.limits) - set(Limits.model_fields)
        if unknown:
            raise FleetSpecError(f"group {self.name!r}: unknown limit(s) {sorted(unknown)}; known: {sorted(Limits.model_fields)}")
        try:
            return Limits(**self.limits)
        except (TypeError, ValueError) as exc:
            raise FleetSpecError(f"group {self.name!r}: limits: {exc}; known: {sorted(Limits.model_fields)}") from None

    def scaled(self, count: int) -> "ReplicaGroup":
        """The same group with `count` replicas (per node, for a per_node group)."""
        group = replace(self, per_node=count) if self.per_node is not None else replace(self, replicas=count)
        group.validate()
        return group


@dataclass(frozen=True)
class FleetSpec:
    groups: tuple[ReplicaGroup, ...]
    name: str = "gymwire"
    auth: bool = True

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise FleetSpecError(f"fleet name {self.name!r}: letters, digits, '_', '.', '-' (at most 63)")
        if not self.groups:
            raise FleetSpecError("a fleet needs at least one group (name, envs, replicas or per_node)")
        names = [group.name for group in self.groups]
        if len(set(names)) != len(names):
            raise FleetSpecError(f"group names must differ, got {names}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "FleetSpec":
        unknown = set(raw) - {"name", "auth", "groups"}
        if unknown:
            raise FleetSpecError(f"unknown key(s) {sorted(unknown)}; known: auth, groups, name")
        groups = raw.get("groups")
        if not isinstance(groups, list) or not all(isinstance(g, Mapping) for g in groups):
            raise FleetSpecError("`groups` must be a list of groups (each with name, envs, replicas or per_node)")
        auth = raw.get("auth", True)
        if not isinstance(auth, bool):
            raise FleetSpecError(f"`auth` must be true or false, got {auth!r}")
        return cls(
            groups=tuple(ReplicaGroup.from_mapping(g) for g in groups), name=str(raw.get("name", "gymwire")), auth=auth
        )

    def group(self, name: str) -> ReplicaGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise FleetSpecError(f"no group {name!r}; the fleet has {[g.name for g in self.groups]}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _env_entry(entry: Any, where: str) -> str | Mapping[str, Any]:
    """An environment of a group as the serve file has it: text, or {env, kwargs, name}."""
    if isinstance(entry, str) and entry:
        return entry
    if isinstance(entry, Mapping) and isinstance(entry.get("env"), str):
        extra = sorted(set(entry) - {"env", "kwargs", "name"})
        if extra:
            raise FleetSpecError(f"{where}: unknown key {extra[0]!r} in an envs entry; an entry has env, kwargs and name")
        if not isinstance(entry.get("kwargs", {}), Mapping):
            raise FleetSpecError(f"{where}: an envs entry's kwargs must map constructor arguments to values")
        return dict(entry)
    raise FleetSpecError(f"{where}: an envs entry is a name or module:Class, or a mapping with `env`; got {entry!r}")


def env_specs(group: ReplicaGroup) -> list[Any]:
    """The group's environments as EnvSpecs (imports their classes: call it where they run)."""
    from ..registry import resolve_env

    specs = []
    for entry in group.envs:
        if isinstance(entry, str):
            specs.append(resolve_env(entry))
        else:
            specs.append(resolve_env(entry["env"], entry.get("kwargs") or {}, entry.get("name")))
    return specs


def load_fleet_spec(path: str | Path) -> FleetSpec:
    """A fleet file: YAML (.yaml, .yml), TOML (.toml) or JSON."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FleetSpecError(f"cannot read the fleet file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise FleetSpecError("YAML fleet files need pyyaml: pip install 'gymwire[ray]'") from None
            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(str(exc)) from None
        elif path.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except ValueError as exc:  # and TOMLDecodeError, JSONDecodeError
        raise FleetSpecError(f"{path} does not parse: {exc}") from None
    if not isinstance(raw, Mapping):
        raise FleetSpecError(f"{path} must hold a mapping with `groups`")
    return FleetSpec.from_mapping(raw)
