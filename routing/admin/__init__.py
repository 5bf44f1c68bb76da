"""Admin for managers, one module per concern."""

from routing.admin import leads, pools  # noqa: F401
