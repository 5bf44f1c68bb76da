"""`manage.py load_org FILE` — upsert teams, skills, territories, reps and pools from JSON (CONTRACT §2)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from reps.orgfile import parse_org
from reps.services import known_names, org_load


class Command(BaseCommand):
    help = "Load the organisation file (JSON). Every fault is reported with its path; nothing is written then."

    def add_arguments(self, parser):
        parser.add_argument("file", help="path to the organisation JSON file")

    def handle(self, *args, file: str, **options):
        try:
            with open(file, encoding="utf-8-sig") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"$: cannot read {file}: {exc}", returncode=2) from exc
        org, errors = parse_org(text, known=known_names())
        if errors:
            for line in errors:
                self.stderr.write(line)
            fault = "fault" if len(errors) == 1 else "faults"
            raise CommandError(f"{file}: {len(errors)} {fault}, nothing written", returncode=2)
        self.stdout.write(str(org_load(org)))
