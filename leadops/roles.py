"""The three roles (Managers, Reps, Ops), their permissions, and the decorators views use.

Superusers count as managers. A user may hold several roles; home() picks the most powerful.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

MANAGERS = "Managers"
REPS = "Reps"
OPS = "Ops"

# app_label.codename, by group. Managers run the admin; ops import; reps work leads via the board.
GROUP_PERMISSIONS: dict[str, list[str]] = {
    MANAGERS: [
        "reps.add_rep", "reps.change_rep", "reps.view_rep", "reps.delete_rep",
        "reps.add_team", "reps.change_team", "reps.view_team", "reps.delete_team",
        "reps.add_territory", "reps.change_territory", "reps.view_territory", "reps.delete_territory",
        "reps.add_skill", "reps.change_skill", "reps.view_skill", "reps.delete_skill",
        "reps.add_workinghours", "reps.change_workinghours", "reps.view_workinghours",
        "reps.delete_workinghours",
        "reps.add_timeoff", "reps.change_timeoff", "reps.view_timeoff", "reps.delete_timeoff",
        "routing.view_lead", "routing.change_lead", "routing.add_lead", "routing.reassign_lead",
        "routing.view_leadevent",
        "routing.view_ruleset", "routing.add_ruleset", "routing.change_ruleset",
        "routing.view_rule", "routing.add_rule", "routing.change_rule", "routing.delete_rule",
        "routing.view_pool", "routing.add_pool", "routing.change_pool",
        "routing.view_poolmembership", "routing.add_poolmembership", "routing.change_poolmembership",
        "routing.delete_poolmembership",
        "routing.view_notification", "routing.change_notification",
        "routing.view_importjob", "routing.import_leads", "routing.view_reports",
        "routing.view_apitoken", "routing.change_apitoken",
    ],
    OPS: ["routing.add_lead", "routing.view_importjob", "routing.import_leads"],
    REPS: [],
}


def _in_group(user, name: str) -> bool:
    if not user.is_authenticated:
        return False
    cache = getattr(user, "_leadops_groups", None)
    if cache is None:
        cache = set(user.groups.values_list("name", flat=True))
        user._leadops_groups = cache
    return name in cache


def remember_groups(user, names: Iterable[str]) -> None:
    """Give the role checks a user's group names read along with something else (an API token),
    so they do not ask the database again."""
    user._leadops_groups = set(names)


def is_manager(user) -> bool:
    return bool(user.is_authenticated and (user.is_superuser or _in_group(user, MANAGERS)))


def is_ops(user) -> bool:
    return _in_group(user, OPS)


def is_rep(user) -> bool:
    return bool(user.is_authenticated and hasattr(user, "rep") and _in_group(user, REPS))


def home_url(user) -> str:
    if is_manager(user):
        return "/reports/"
    if is_rep(user):
        return "/board/"
    if is_ops(user):
        return "/intake/"
    return "/login/"


def role_required(check: Callable[[object], bool]) -> Callable:
    """Login required, then `check(user)`; a logged-in user without the role gets 403."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        @login_required
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not check(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


manager_required = role_required(is_manager)
rep_required = role_required(is_rep)
ops_required = role_required(lambda u: is_ops(u) or is_manager(u))


def roles_context(request: HttpRequest) -> dict[str, bool]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"is_manager": False, "is_rep": False, "is_ops": False}
    return {"is_manager": is_manager(user), "is_rep": is_rep(user), "is_ops": is_ops(user)}


def ensure_groups() -> None:
    """Create the role groups with their permissions (idempotent)."""
    from django.contrib.auth.models import Group, Permission

    for name, perms in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".")
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is not None:
                wanted.append(perm)
        group.permissions.set(wanted)


def ensure_groups_after_migrate(sender, using="default", **kwargs) -> None:
    ensure_groups()
