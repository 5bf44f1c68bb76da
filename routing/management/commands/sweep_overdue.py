"""`manage.py sweep_overdue [--now ISO]` — pool timeouts, SLA escalations and undelivered
notifications due at `--now` (default: the current time). Idempotent at a given `--now`."""

from __future__ import annotations

import datetime as dt
import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from routing.sla import sweep_overdue


def parse_now(value: str | None) -> dt.datetime:
    if not value:
        return timezone.now()
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandError(f"--now: not an ISO 8601 date-time: {value!r}") from exc
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, dt.UTC)
    return parsed


class Command(BaseCommand):
    help = "Escalate overdue SLAs, apply pool timeouts and deliver pending notifications."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--now", help="ISO 8601 time to sweep at (default: now; naive = UTC)")
        parser.add_argument("--json", action="store_true", help="print the counts as one JSON object")

    def handle(self, *args, **options) -> None:
        now = parse_now(options["now"])
        result = sweep_overdue(now)
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            parts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in result.items())
            self.stdout.write(f"Swept at {now.isoformat()}: {parts}")
