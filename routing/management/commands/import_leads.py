"""`python manage.py import_leads FILE [--source NAME] [--dry-run] [--no-route] [--json]` (CONTRACT §4)."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from routing.csvio import CsvUnreadable, open_path
from routing.intake import Importer


class Command(BaseCommand):
    help = "Import leads from a CSV file (UTF-8 or Latin-1, comma or semicolon separated)."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--source", default="", help="Source for leads without one (default: the file name).")
        parser.add_argument("--dry-run", action="store_true", help="Validate and report; write nothing.")
        parser.add_argument("--no-route", action="store_true", help="Leave the new leads unassigned.")
        parser.add_argument("--json", action="store_true", help="Print the summary as one JSON object.")

    def handle(self, *args, **opts):
        path = Path(opts["file"])
        source = opts["source"] or path.name
        try:
            csvfile, stream = open_path(path)
        except (CsvUnreadable, OSError) as exc:
            # Exit code 2: the file as a whole could not be read (CONTRACT §4).
            raise CommandError(f"{path}: {exc}", returncode=2) from exc
        with stream:
            result = Importer(source=source, route=not opts["no_route"], dry_run=opts["dry_run"]).run(csvfile)
        if opts["json"]:
            self.stdout.write(json.dumps(result.as_json()))
            return
        prefix = "Dry run: would import" if opts["dry_run"] else "Imported"
        self.stdout.write(
            f"{prefix} {path.name}: {result.rows} rows, {result.created} created, {result.merged} merged, "
            f"{result.failed} failed; {result.assigned} assigned, {result.pooled} pooled, "
            f"{result.unassigned} unassigned."
        )
        for err in result.errors[:50]:
            self.stdout.write(f"  row {err['row']} [{err['column']}]: {err['message']}")
        if len(result.errors) > 50:
            self.stdout.write(f"  … and {len(result.errors) - 50} more (use --json for all)")
