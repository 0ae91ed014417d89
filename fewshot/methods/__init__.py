"""Built-in learners; importing this package registers them."""

from . import maml, protonet  # noqa: F401
