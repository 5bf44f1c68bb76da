"""Admin for managers, one module per concern."""

from routing.admin import leads  # noqa: F401
