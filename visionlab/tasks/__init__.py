"""Built-in tasks; importing this package registers them."""

from visionlab.tasks import segment  # noqa: F401
from visionlab.tasks import depth  # noqa: F401
from visionlab.tasks import classify  # noqa: F401
