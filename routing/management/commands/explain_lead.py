"""`manage.py explain_lead ID`: JSON — the rules tried, each candidate and why (CONTRACT §6)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from routing.management.commands.route_pending import parse_now
from routing.models import Lead
from routing.services import lead_explain


class Command(BaseCommand):
    help = "Explain why a lead went where it went (or where the published rules would send it)."

    def add_arguments(self, parser):
        parser.add_argument("lead_id", type=int)
        parser.add_argument("--now", help="For a lead never routed: decide as of this moment (ISO 8601).")

    def handle(self, *args, lead_id: int, now: str | None = None, **options):
        lead = Lead.objects.select_related("owner__user", "pool").filter(pk=lead_id).first()
        if lead is None:
            raise CommandError(f"no lead with id {lead_id}", returncode=2)
        self.stdout.write(json.dumps(lead_explain(lead, now=parse_now(now)), indent=2, ensure_ascii=False))
