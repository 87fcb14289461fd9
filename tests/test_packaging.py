"""The install layout: every sub-package is listed, dependencies point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"protocol": "gymwire.protocol", "sdk": "gymwire.sdk", "servers": "gymwire.servers", "trainers": "gymwire.trainers"}


def _packages_on_disk() -> set[str]:
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    return found


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    missing = _packages_on_disk() - listed
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_dependencies_point_one_way():
    forbidden = {
        "protocol": ("gymwire.sdk", "gymwire.servers", "gymwire.trainers", "asyncio", "websockets"),
        "sdk": ("gymwire.servers", "gymwire.trainers"),
        "servers": ("gymwire.trainers", "websockets"),
    }
    offenders = []
    for folder, prefixes in forbidden.items():
        for path in (ROOT / folder).rglob("*.py"):
            for name in _imports(path):
                if name.startswith(prefixes):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_protocol_and_sdk_import_without_heavy_dependencies():
    code = (
        "import sys, gymwire.protocol, gymwire.sdk, gymwire.sdk.server, gymwire.sdk.client, gymwire.trainers\n"
        "heavy = [m for m in ('torch', 'transformers', 'minigrid', 'openrlhf', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
