"""Built-in tasks; importing this package registers them."""

from visionlab.tasks import segment  # noqa: F401
