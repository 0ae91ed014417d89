"""``python -m fewshot.cli``: the ``fewshot`` command."""

from . import main

main()
