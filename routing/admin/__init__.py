"""Admin for managers, one module per concern."""

from routing.admin import intake, leads, notifications, pools  # noqa: F401
