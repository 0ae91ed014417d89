"""The library's version, without importing anything heavy (``fewshot --version`` answers before
torch is imported)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def library_version() -> str:
    """The installed package's version; for a source tree that is not installed, the version
    in its ``pyproject.toml``; ``unknown`` when neither says."""
    try:
        return metadata.version("fewshot")
    except metadata.PackageNotFoundError:
        pass
    try:
        text = PYPROJECT.read_text()
    except OSError:
        return "unknown"
    match = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    return match[1] if match else "unknown"


__version__ = library_version()
