"""Built-in learners; importing this package registers them."""

from . import classifier, maml, matching, protonet, relation  # noqa: F401
