"""Built-in learners; importing this package registers them."""

from . import maml, matching, protonet, relation  # noqa: F401
