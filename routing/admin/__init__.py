"""Admin for managers, one module per concern."""

from routing.admin import leads, notifications, pools  # noqa: F401
