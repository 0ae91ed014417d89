"""Built-in learners; importing this package registers them."""

from . import protonet  # noqa: F401
