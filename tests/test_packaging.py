"""The install layout: every sub-package is listed, dependencies point one way."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "protocol": "gymwire.protocol", "sdk": "gymwire.sdk", "servers": "gymwire.servers", "trainers": "gymwire.trainers",
    "spec": "gymwire.spec", "bench/suite": "gymwire.bench",
}
CODE_FOLDERS = ["protocol", "sdk", "servers", "trainers", "bench/suite"]


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
        "protocol": ("gymwire.sdk", "gymwire.servers", "gymwire.trainers", "gymwire.bench", "asyncio", "websockets"),
        "sdk": ("gymwire.servers", "gymwire.trainers", "gymwire.bench"),
        "servers": ("gymwire.trainers", "websockets"),
    }
    offenders = []
    for folder, prefixes in forbidden.items():
        for path in (ROOT / folder).rglob("*.py"):
            for name in _imports(path):
                if name.startswith(prefixes):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


# The command-line front ends of the SDK; the runtime (server, client, runners) must not import
# them, so that serving or connecting never loads argument parsing and sub-command plugins.
CLI_MODULES = ("gymwire.sdk.cli", "gymwire.sdk.commands", "gymwire.sdk.conformance.cli", "gymwire.bench.cli")
TOOL_PACKAGES = ("conformance",)  # sdk/ sub-packages that are tools, not runtime


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [FOLDERS[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolved_imports(source: str, package: str) -> set[str]:
    """Every module (and imported name) a file of `package` imports, relative imports resolved."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _package_of(path: Path) -> str:
    return _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]


def _runtime_files() -> list[Path]:
    files = list((ROOT / "protocol").rglob("*.py"))
    for path in (ROOT / "sdk").rglob("*.py"):
        relative = path.relative_to(ROOT / "sdk").parts
        if relative[0] in TOOL_PACKAGES or _module_name(path) in CLI_MODULES:
            continue
        files.append(path)
    return files


def test_the_runtime_does_not_import_the_cli():
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _runtime_files()
        for name in _resolved_imports(path.read_text(), _package_of(path))
        if any(name == cli or name.startswith(cli + ".") for cli in CLI_MODULES)
    ]
    assert not offenders, f"move what they need into a leaf module: {offenders}"


def test_the_cli_check_resolves_relative_imports():
    # The cycle the check was written for: sdk/server.py took package_version from sdk/cli.py.
    assert "gymwire.sdk.cli.package_version" in _resolved_imports("from .cli import package_version", "gymwire.sdk")
    assert "gymwire.sdk.cli" in _resolved_imports("from .. import cli", "gymwire.sdk.serving")


def test_protocol_and_sdk_import_without_heavy_dependencies():
    code = (
        "import sys, gymwire.protocol, gymwire.sdk, gymwire.sdk.server, gymwire.sdk.client, gymwire.trainers\n"
        "heavy = [m for m in ('torch', 'transformers', 'minigrid', 'openrlhf', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_declared_python_floor_is_the_one_the_code_needs():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = re.fullmatch(r">=(\d+\.\d+)", declared.replace(" ", ""))
    assert floor, f"requires-python should be a plain floor like >=3.11, got {declared!r}"
    # vermin reads the code and names the lowest Python able to run it (typing.Self needs 3.11, ...).
    found = subprocess.run(
        [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "--no-tips", "--eval-annotations",
         *(str(ROOT / f) for f in CODE_FOLDERS)],
        capture_output=True, text=True, check=True,
    ).stdout
    needed = re.search(r"Minimum required versions: (\d+\.\d+)", found).group(1)
    assert needed == floor.group(1), f"the code needs Python {needed}, pyproject declares {declared}"
    assert sys.version_info >= tuple(map(int, needed.split("."))), "tests run on a Python the package does not support"


def test_the_wheel_ships_the_spec_and_py_typed(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = tmp_path.glob("gymwire-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    spec_files = {"PROTOCOL.md", "CONFORMANCE.md", "requirements.json"} | {
        f"schemas/{p.name}" for p in (ROOT / "spec" / "schemas").glob("*.json")
    }
    missing = {f"gymwire/spec/{f}" for f in spec_files} - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    for package in ("protocol", "sdk", "servers", "trainers"):
        assert f"gymwire/{package}/py.typed" in names
    # Every tracked data file under the four packages (viewer page, built-in question sets) ships.
    tracked = subprocess.run(["git", "ls-files", "protocol", "sdk", "servers", "trainers"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    data = {f"gymwire/{name}" for name in tracked if not name.endswith(".py")}
    assert data <= names, f"not in the wheel: {sorted(data - names)}"


def test_gymwire_spec_prints_paths_that_exist():
    out = subprocess.run([sys.executable, "-m", "gymwire.sdk.cli", "spec"], capture_output=True, text=True, check=True).stdout
    paths = dict(line.split(":", 1) for line in out.splitlines() if line.startswith(("spec:", "schemas:")))
    assert Path(paths["spec"].strip()).is_file() and Path(paths["schemas"].strip(), "step.json").is_file()
