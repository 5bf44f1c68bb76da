"""`python manage.py create_api_token USERNAME [--name N] [--scope full|intake]` prints a new token."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from routing.models import ApiToken


class Command(BaseCommand):
    help = "Issue an API token for a user and print it (only its hash is stored: save it now)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="Shown as the source of the leads it creates.")
        parser.add_argument("--scope", choices=[s.value for s in ApiToken.Scope], default=ApiToken.Scope.FULL)

    def handle(self, *args, **opts):
        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no user named {opts['username']!r}", returncode=2)
        _, raw = ApiToken.issue(user, name=opts["name"], scope=opts["scope"])
        self.stdout.write(raw)
