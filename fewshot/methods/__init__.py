"""Built-in learners; importing this package registers them."""

from . import matching, protonet, relation  # noqa: F401
