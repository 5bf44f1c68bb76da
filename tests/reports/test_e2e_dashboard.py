"""The dashboard in a real browser: charts draw, filters swap the body with htmx and land in the URL."""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from routing.models import Lead
from tests.conftest import CHROMIUM
from tests.factories import PoolFactory, RepFactory, TeamFactory, UserFactory

# Playwright's sync API runs an event loop in this thread; the ORM calls around it are still sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# Screenshots for a human to look at; CI can point this at its artefacts folder.
SHOTS = Path(os.environ.get("LEADOPS_SCREENSHOTS", tempfile.gettempdir()))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]


def seed(now: dt.datetime, n: int = 400) -> None:
    rnd = random.Random(7)
    emea, apac = TeamFactory(name="EMEA"), TeamFactory(name="APAC")
    reps = [RepFactory(team=emea if i % 2 else apac, weight=1 + i % 3, capacity=20,
                       user__username=f"rep{i}") for i in range(6)]
    pool = PoolFactory(name="smb", claim_limit=3, members=reps[:3])
    leads = []
    for i in range(n):
        received = now - dt.timedelta(days=rnd.uniform(0, 30), hours=rnd.uniform(0, 8))
        received = received.replace(hour=int(rnd.triangular(6, 20, 10)))
        owner = rnd.choice(reps) if rnd.random() > 0.08 else None
        pooled = owner is not None and rnd.random() < 0.25
        touch = rnd.choice([1, 3, 4, 8, 20, 45, 90, 300, 1600, None]) if owner else None
        first_touch = received + dt.timedelta(minutes=touch) if touch is not None else None
        if first_touch and first_touch > now:
            first_touch = None
        status = "unassigned" if owner is None else rnd.choice(
            ["assigned", "contacted", "qualified", "won", "lost"] if first_touch else ["assigned"])
        leads.append(Lead(
            email=f"lead{i}@customer.example", company=f"Company {i}", received_at=received,
            source=rnd.choice(["web", "webinar", "referral", "purchased list"]),
            industry=rnd.choice(["fintech", "retail", "health"]), country=rnd.choice(["DE", "FR", "US"]),
            company_size=rnd.choice([8, 30, 120, 600, 2500, 9000]), score=rnd.randint(10, 95),
            value=Decimal(rnd.randint(5, 120) * 100), owner=owner, status=status,
            pool=pool if pooled else None,
            routed_at=received + dt.timedelta(seconds=rnd.randint(1, 40)) if owner else None,
            assigned_at=received + dt.timedelta(minutes=1) if owner else None,
            pooled_at=received + dt.timedelta(seconds=30) if pooled else None,
            claimed_at=received + dt.timedelta(minutes=rnd.randint(1, 30)) if pooled else None,
            notified_at=received + dt.timedelta(minutes=1, seconds=20) if owner else None,
            first_touch_at=first_touch,
            sla_due_at=received + dt.timedelta(minutes=15) if owner else None,
            escalation_step=1 if owner and (touch is None or touch > 15) and rnd.random() < 0.5 else 0,
        ))
    Lead.objects.bulk_create(leads)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_it_draws_the_dashboard_and_swaps_the_body_when_a_filter_changes(live_server, playwright):
    seed(timezone.now())
    UserFactory(username="dora", groups=["Managers"], is_staff=True)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(f"{live_server.url}/login/")
        page.fill("input[name=username]", "dora")
        page.fill("input[name=password]", "pw-secret-123")
        page.click("button[type=submit]")
        page.goto(f"{live_server.url}/reports/")
        page.wait_for_function("() => window.Chart && Chart.getChart(document.querySelector('canvas'))")
        page.screenshot(path=SHOTS / "reports.png", full_page=True)
        page.select_option("select[name=team]", label="EMEA")
        page.wait_for_url("**team=*")
        page.wait_for_function("() => Chart.getChart(document.querySelector('canvas'))")
        assert page.locator("#report-body").count() == 1
        assert page.locator("header.topbar").count() == 1  # only the body was swapped
        page.goto(f"{live_server.url}/reports/fairness/")
        page.screenshot(path=SHOTS / "reports-fairness.png", full_page=True)
        page.set_viewport_size({"width": 390, "height": 900})
        page.goto(f"{live_server.url}/reports/")
        page.screenshot(path=SHOTS / "reports-phone.png", full_page=True)
    finally:
        browser.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_it_shows_a_rep_their_own_numbers(live_server, playwright):
    seed(timezone.now(), n=120)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
        page = browser.new_page(viewport={"width": 390, "height": 900})
        page.goto(f"{live_server.url}/login/")
        page.fill("input[name=username]", "rep1")
        page.fill("input[name=password]", "pw-secret-123")
        page.click("button[type=submit]")
        page.goto(f"{live_server.url}/reports/me/")
        assert page.locator(".stat").count() == 6
        assert page.locator("select[name=rep]").count() == 0  # no way to look at another rep
        page.screenshot(path=SHOTS / "reports-me.png", full_page=True)
    finally:
        browser.close()
