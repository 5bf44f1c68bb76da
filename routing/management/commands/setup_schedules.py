"""`manage.py setup_schedules` — create or update the django-q2 schedules (idempotent, by name)."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand
from django.utils import timezone
from django_q.models import Schedule

SCHEDULES = [
    # name, function, schedule type, minutes
    ("route_pending", "routing.tasks.route_pending", Schedule.MINUTES, 1),
    ("sweep_overdue", "routing.tasks.sweep_overdue", Schedule.MINUTES, 1),
    ("housekeeping", "routing.tasks.housekeeping", Schedule.DAILY, None),
]


class Command(BaseCommand):
    help = "Create or update the background schedules (route_pending, sweep_overdue, housekeeping)."

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        for name, func, kind, minutes in SCHEDULES:
            first_run = now if kind == Schedule.MINUTES else (now + dt.timedelta(days=1)).replace(
                hour=3, minute=0, second=0, microsecond=0
            )
            _, created = Schedule.objects.update_or_create(
                name=name,
                defaults={"func": func, "schedule_type": kind, "minutes": minutes, "repeats": -1, "args": None,
                          "kwargs": None},
                # Only a new schedule gets a first run time; re-running keeps the existing rhythm.
                create_defaults={"func": func, "schedule_type": kind, "minutes": minutes, "repeats": -1,
                                 "next_run": first_run},
            )
            self.stdout.write(f"{'created' if created else 'updated'} schedule {name} ({func})")
