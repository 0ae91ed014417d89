"""Values written as text, parsed without torch: a memory size (``--max-memory 2GB``) and an input
normalisation (``--normalize imagenet``). The command line checks them while it parses its
arguments, so ``fewshot COMMAND --help`` and a mistyped flag are answered before torch is
imported; :mod:`fewshot.engine.memory` and :mod:`fewshot.models.input_norm` use them."""

from __future__ import annotations

import re
from typing import Any

UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
         "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
         "tib": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"2GB"``, ``"512M"``, ``"1.5GiB"`` or a plain number of bytes -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if m is None or m.group(2).lower() not in UNITS:
        raise ValueError(f"memory size {text!r} is not a size: write it like 2GB, 512MB or 1.5GiB")
    value = int(float(m.group(1)) * UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"memory size {text!r} must be above zero")
    return value


NAMED = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
         "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
CHOICES = ("auto", "none", *NAMED, "MEAN/STD")
Normalize = dict[str, list[float]] | None


def _numbers(text: str, what: str, given: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"normalisation {given!r}: the {what} must be numbers separated by commas "
                         f"(e.g. 0.5,0.5,0.5/0.25,0.25,0.25); choose one of "
                         f"{', '.join(CHOICES)}") from None
    return values


def parse_normalize(text: str) -> Normalize | str:
    """``--normalize`` text as ``"auto"``, None or ``{"mean": [...], "std": [...]}`` (lengths
    equal, every std positive; the channel count is checked by
    :func:`fewshot.models.input_norm.resolve_normalize`).

    Raises:
        ValueError: an unknown choice, numbers that do not parse, lengths that differ, std <= 0.
    """
    text = text.strip()
    if text in ("auto", "none"):
        return None if text == "none" else text
    if text in NAMED:
        return {"mean": list(NAMED[text][0]), "std": list(NAMED[text][1])}
    if "/" not in text:
        raise ValueError(f"normalisation {text!r}: choose one of {', '.join(CHOICES)}")
    mean, _, std = text.partition("/")
    mean, std = _numbers(mean, "mean", text), _numbers(std, "std", text)
    if len(mean) != len(std):
        raise ValueError(f"normalisation {text!r}: {len(mean)} means but {len(std)} stds: give "
                         f"one of each per channel")
    return check_normalize({"mean": mean, "std": std}, len(mean), f"normalisation {text!r}")


def check_normalize_text(text: str) -> str:
    """``text`` (a ``--normalize`` value) once :func:`parse_normalize` accepts it."""
    parse_normalize(text)
    return text.strip()


def check_normalize(norm: Any, channels: int, source: str = "normalize") -> Normalize:
    """``norm`` checked: None or ``{"mean": [c floats], "std": [c floats > 0]}`` with ``c`` 1 or
    ``channels``."""
    if norm is None:
        return None
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise ValueError(f"{source}: expected None or {{'mean': [...], 'std': [...]}}, got {norm!r}")
    mean, std = ([float(v) for v in norm[k]] for k in ("mean", "std"))
    if len(mean) != len(std) or len(mean) not in (1, channels):
        need = "1 value" if channels == 1 else f"1 or {channels} values"
        raise ValueError(f"{source}: mean and std need {need} each (one per channel), got "
                         f"{len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"{source}: every std must be positive, got {std}")
    return {"mean": mean, "std": std}


