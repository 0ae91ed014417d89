"""Built-in learners; importing this package registers them (in this order: the order of the
help texts and the tables)."""

from . import protonet  # noqa: F401, I001
from . import matching, relation  # noqa: F401, I001
from . import maml  # noqa: F401, I001
from . import classifier  # noqa: F401, I001
