from django.core.management.base import BaseCommand

from leadops import demo


class Command(BaseCommand):
    help = "Load the demo company (teams, reps, pools, rules, ~2,000 leads). Runs once; --reset reloads."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Delete the demo data and load it again.")
        parser.add_argument("--leads", type=int, default=2000, help="Historical leads to generate.")
        parser.add_argument("--print-logins", action="store_true", help="Only print the demo logins.")

    def handle(self, *args, reset=False, leads=2000, print_logins=False, **options):
        if print_logins:
            self._print_logins()
            return
        if reset:
            demo.demo_reset()
        elif demo.demo_loaded():
            self.stdout.write("Demo data already loaded (use --reset to reload).")
            return
        counts = demo.demo_seed(leads=leads)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo loaded: {counts['history']} historical leads, {counts['live']} fresh leads "
                f"({counts['assigned']} assigned, {counts['pooled']} pooled, {counts['unassigned']} unassigned)."
            )
        )
        self._print_logins()

    def _print_logins(self):
        self.stdout.write(f"Demo logins (password for all: {demo.DEMO_PASSWORD}):")
        for username, role in demo.LOGINS:
            self.stdout.write(f"  {username:<8} {role}")
