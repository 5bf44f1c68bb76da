"""`manage.py export_rules`: print the published rule set (or --version N) in the rule-file format."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from routing.models import RuleSet
from routing.rulefile import ruleset_dumps
from routing.services import ruleset_to_dict


class Command(BaseCommand):
    help = "Print the rule set in force as JSON, in the same format load_rules reads."

    def add_arguments(self, parser):
        parser.add_argument("--ruleset-version", type=int, dest="ruleset_version", help="Export this version instead.")

    def handle(self, *args, ruleset_version: int | None = None, **options):
        if ruleset_version is not None:
            rule_set = RuleSet.objects.filter(version=ruleset_version).first()
            if rule_set is None:
                raise CommandError(f"--ruleset-version: no rule set v{ruleset_version}", returncode=2)
        else:
            rule_set = RuleSet.objects.filter(status=RuleSet.Status.PUBLISHED).first()
            if rule_set is None:
                raise CommandError("no published rule set (load_rules FILE --publish)", returncode=2)
        self.stdout.write(ruleset_dumps(ruleset_to_dict(rule_set)), ending="")
