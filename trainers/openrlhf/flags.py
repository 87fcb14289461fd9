"""OpenRLHF's own argument parser, to check a command line before anything starts.

openrlhf 0.11.2 builds `train_ppo_ray`'s parser inside the module's `if __name__ == "__main__":`
block, then checks the parsed arguments with asserts, in a module that imports ray at the top. So
the parser cannot be imported. Instead that block is read from the installed module's source and
run here up to `train(args)`, with the module's standard-library imports only: every flag and
check is openrlhf's own, for whatever version is installed, and ray, DeepSpeed and vLLM are not
needed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from gymwire.sdk.errors import UserError

__all__ = ["OpenRLHFArgumentError", "check_openrlhf_args"]

MODULE = "openrlhf.cli.train_ppo_ray"


class OpenRLHFArgumentError(UserError, ValueError):
    """OpenRLHF's parser or its checks refuse the command line."""


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print the usage and exit
        raise OpenRLHFArgumentError(message)


@lru_cache(maxsize=1)
def _main_block() -> tuple[list[ast.stmt], list[ast.stmt], list[ast.stmt]]:
    """The module's standard-library imports, the statements of its `__main__` block that build the
    parser, and those that check `args`."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except ModuleNotFoundError:
        spec = None
    if spec is None or spec.origin is None:
        raise OpenRLHFArgumentError(f"openrlhf is not installed (pip install openrlhf==0.11.2): cannot read {MODULE}")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    main = next(
        (node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)), None
    )
    if main is None:
        raise OpenRLHFArgumentError(f"{spec.origin} has no `if __name__ == '__main__'` block: unknown openrlhf version")
    parsing = next((i for i, node in enumerate(main.body) if "parse_args()" in ast.unparse(node)), None)
    if parsing is None:
        raise OpenRLHFArgumentError(f"{spec.origin}: no parse_args() in its __main__ block: unknown openrlhf version")
    checks = []
    for node in main.body[parsing + 1 :]:
        text = ast.unparse(node)
        if text.startswith("train(") or "use_ms" in text:  # training itself, and a hub patch
            continue
        checks.append(node)
    stdlib_imports = [
        node
        for node in tree.body
        if isinstance(node, ast.Import) and all(a.name.split(".")[0] in sys.stdlib_module_names for a in node.names)
        or isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in sys.stdlib_module_names
    ]
    return stdlib_imports, main.body[:parsing], checks


def check_openrlhf_args(args: Sequence[str]) -> list[str]:
    """Parse `args` (train_ppo_ray's flags) with openrlhf's parser and run its checks. Returns what
    openrlhf prints about them (its warnings); raises OpenRLHFArgumentError on a refusal."""
    imports, build, checks = _main_block()
    scope: dict[str, Any] = {}
    exec(compile(ast.Module(body=imports, type_ignores=[]), MODULE, "exec"), scope)
    # A parser that raises instead of printing the usage and exiting.
    scope["argparse"] = types.SimpleNamespace(**{**vars(argparse), "ArgumentParser": _RaisingParser})
    exec(compile(ast.Module(body=build, type_ignores=[]), MODULE, "exec"), scope)
    from openrlhf.utils.config import hierarchize

    scope["args"] = hierarchize(scope["parser"].parse_args(list(args)))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(ast.Module(body=checks, type_ignores=[]), MODULE, "exec"), scope)
    except AssertionError as exc:
        raise OpenRLHFArgumentError(f"openrlhf refuses the arguments: {exc}") from None
    return [line for line in printed.getvalue().splitlines() if line.strip()]
