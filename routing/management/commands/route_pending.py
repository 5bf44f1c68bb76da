"""`manage.py route_pending [--now ISO]`: route every unassigned lead, oldest received first (CONTRACT §6).

Leads imported with "do not route" (`Lead.routing_held`) are not among them: they wait for a manager
in the Unassigned queue, who routes or assigns them (or releases them all to this command)."""

from __future__ import annotations

import datetime as dt
import json

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from routing.models import Lead
from routing.services import route_leads


def parse_now(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--now: not an ISO 8601 time: {value!r}", returncode=2) from exc
    return moment if moment.tzinfo else timezone.make_aware(moment, dt.UTC)


class Command(BaseCommand):
    help = ("Route every unassigned lead that can be routed, oldest received_at first (not those imported "
            "with --no-route: they wait for a manager).")

    def add_arguments(self, parser):
        parser.add_argument("--now", help="Route as if it were this moment (ISO 8601; default: now).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the counts as one JSON object.")

    def handle(self, *args, now: str | None = None, as_json: bool = False, **options):
        moment = parse_now(now)
        pending = Lead.objects.filter(status=Lead.Status.UNASSIGNED, routing_held=False).order_by("received_at", "id")
        ids = list(pending.values_list("pk", flat=True))
        counts = route_leads(ids, now=moment)
        if as_json:
            self.stdout.write(json.dumps(counts))
        else:
            self.stdout.write(
                f"Routed {len(ids)} unassigned lead(s): {counts['assigned']} assigned, "
                f"{counts['pooled']} pooled, {counts['unassigned']} still unassigned."
            )
