"""A griffe extension for the API reference: the docstrings name objects with Sphinx roles
(``:func:`evaluate```, ``:class:`~episodes.ImagePipeline```); in Markdown these become code spans
(```evaluate```, ```ImagePipeline```), so the rendered pages show the name without the role."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc):`~?\.?([^`]+)`")


def plain_names(text: str) -> str:
    """``:role:`name``` -> ```name```; ``~a.b.c`` (Sphinx's short form) -> ```c```."""
    def code(match: re.Match) -> str:
        name = match.group(1)
        short = match.group(0).split("`", 1)[1].startswith("~")
        return f"`{name.rsplit('.', 1)[-1] if short else name}`"
    return ROLE.sub(code, text)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_names(obj.docstring.value)
