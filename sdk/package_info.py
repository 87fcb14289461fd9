"""What is installed: the package's version. A leaf module, so the runtime never imports the CLI."""

from __future__ import annotations

import functools
from importlib import metadata


@functools.cache  # read once: parsing the installed METADATA costs ~1 ms, and the server sends it in every welcome
def package_version() -> str:
    try:
        return metadata.version("gymwire")
    except metadata.PackageNotFoundError:
        return "0+unknown"
