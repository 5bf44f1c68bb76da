"""`manage.py load_rules FILE [--publish]`: store a rule-set file as a new draft version (CONTRACT §3)."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from routing.rulefile import RuleFileError, ruleset_parse
from routing.services import ruleset_create_draft, ruleset_publish


class Command(BaseCommand):
    help = "Load a rule-set JSON file as a new draft version; --publish puts it in force."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--publish", action="store_true", help="Make this version the one in force.")
        parser.add_argument("--actor", default="", help="Username recorded as author (default: none).")
        parser.add_argument("--note", default="", help="A short note kept with the version.")

    def handle(self, *args, file: str, publish: bool, actor: str, note: str, **options):
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{file}: cannot read: {exc}", returncode=2) from exc
        user = None
        if actor:
            user = get_user_model().objects.filter(username=actor).first()
            if user is None:
                raise CommandError(f"--actor: unknown user {actor!r}", returncode=2)
        try:
            rule_set = ruleset_create_draft(ruleset_parse(text), actor=user, note=note)
        except RuleFileError as exc:
            for fault in exc.faults:
                self.stderr.write(fault)
            raise CommandError(
                f"{file}: {len(exc.faults)} fault(s), nothing saved: " + "; ".join(exc.faults), returncode=2
            ) from exc
        if publish:
            rule_set = ruleset_publish(rule_set, actor=user)
        rules = rule_set.rules.filter(is_fallback=False).count()
        self.stdout.write(
            f"Loaded {rule_set.name!r} as v{rule_set.version} ({rules} rules"
            f"{', with fallback' if rule_set.fallback else ''}): {rule_set.get_status_display().lower()}."
        )
