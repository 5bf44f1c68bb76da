"""The Django admin is the managers' home for reps, teams, territories and skills."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from leadops import roles
from reps.models import Rep, WorkingHours
from tests.factories import RepFactory, TeamFactory, TerritoryFactory, TimeOffFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/reps/rep/"


def test_it_lists_reps_with_their_settings_for_a_manager(manager_client):
    RepFactory(user__username="zoe", user__first_name="Zoe", user__last_name="Zimmer", team=TeamFactory(name="EMEA"))

    page = manager_client.get(CHANGELIST)

    assert page.status_code == 200
    html = page.content.decode()
    assert "Zoe Zimmer" in html and "zoe" in html and "EMEA" in html
    assert "available now" in html.lower()


def test_it_shows_who_is_available_now(manager_client):
    RepFactory(user__username="present")
    TimeOffFactory(rep=RepFactory(user__username="away"))

    page = manager_client.get(CHANGELIST)

    available = {row.username: row for row in page.context["cl"].result_list}
    admin = page.context["cl"].model_admin
    assert admin.available_now(available["present"]) is True
    assert admin.available_now(available["away"]) is False


def test_it_lists_many_reps_in_a_fixed_number_of_queries(manager_client):
    for i in range(3):
        RepFactory(hours={0: ("09:00", "17:00")}, team=TeamFactory(name=f"T{i}"))
    with CaptureQueriesContext(connection) as few:
        manager_client.get(CHANGELIST)
    for i in range(10):
        RepFactory(hours={0: ("09:00", "17:00")}, team=TeamFactory(name=f"U{i}"))

    with CaptureQueriesContext(connection) as many:
        manager_client.get(CHANGELIST)

    assert len(many) == len(few)


def test_it_finds_a_rep_by_email(manager_client):
    RepFactory(user__username="needle", user__email="needle@haystack.example")
    RepFactory(user__username="straw")

    page = manager_client.get(CHANGELIST, {"q": "haystack"})

    assert [r.username for r in page.context["cl"].result_list] == ["needle"]


def test_it_filters_reps_by_level(manager_client):
    RepFactory(user__username="jun", level=Rep.Level.JUNIOR)
    RepFactory(user__username="dir", level=Rep.Level.DIRECTOR)

    page = manager_client.get(CHANGELIST, {"level__exact": "director"})

    assert [r.username for r in page.context["cl"].result_list] == ["dir"]


def test_it_shows_a_reps_hours_and_time_off_on_its_page(manager_client):
    rep = RepFactory(hours={0: ("09:00", "17:00")})
    TimeOffFactory(rep=rep, start=timezone.now(), end=timezone.now() + dt.timedelta(days=2), reason="Ski trip")

    page = manager_client.get(f"{CHANGELIST}{rep.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Ski trip" in html and "09:00" in html


def test_it_lets_a_manager_change_a_reps_shift(manager_client):
    rep = RepFactory(hours={0: ("09:00", "17:00")})
    shift = WorkingHours.objects.get(rep=rep)
    form = {
        "user": rep.user.pk, "level": "senior", "active": "on", "weight": 2, "timezone": "Europe/Berlin",
        "holidays": "", "notify_email": "on", "notify_webhook": "on",
        "working_hours-TOTAL_FORMS": 1, "working_hours-INITIAL_FORMS": 1,
        "working_hours-0-id": shift.pk, "working_hours-0-rep": rep.pk,
        "working_hours-0-weekday": 0, "working_hours-0-start": "10:00", "working_hours-0-end": "18:00",
        "time_off-TOTAL_FORMS": 0, "time_off-INITIAL_FORMS": 0,
    }

    response = manager_client.post(f"{CHANGELIST}{rep.pk}/change/", form)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    rep.refresh_from_db()
    assert (rep.level, rep.weight, rep.timezone) == ("senior", 2, "Europe/Berlin")
    assert str(WorkingHours.objects.get(rep=rep)) == "mon 10:00–18:00"


def test_it_keeps_reps_out_of_the_admin(rep_client):
    assert rep_client.get(CHANGELIST).status_code == 302


def test_it_lists_territories_with_their_countries(manager_client):
    TerritoryFactory(name="DACH", countries=["DE", "AT", "CH"])

    html = manager_client.get("/admin/reps/territory/").content.decode()

    assert "DE, AT, CH" in html


@pytest.mark.parametrize(
    "path", ["/admin/reps/team/", "/admin/reps/team/add/", "/admin/reps/skill/", "/admin/reps/rep/add/"]
)
def test_it_opens_the_other_organisation_pages(manager_client, path):
    assert manager_client.get(path).status_code == 200


def test_a_manager_sets_a_reps_password_and_the_rep_can_log_in(manager_client, client):
    """Reps from load_org have no usable password: the manager sets one from the rep's admin page."""
    rep = RepFactory(user__username="newhire")
    rep.user.set_unusable_password()
    rep.user.save()
    assert "none yet" in manager_client.get(f"{CHANGELIST}{rep.pk}/change/").content.decode()

    response = manager_client.post(f"{CHANGELIST}{rep.pk}/password/",
                                   {"new_password1": "Welcome-2026-leads", "new_password2": "Welcome-2026-leads"})

    assert response.status_code == 302 and response["Location"] == f"{CHANGELIST}{rep.pk}/change/"
    assert client.login(username="newhire", password="Welcome-2026-leads")


@pytest.mark.parametrize("more", [
    {"user__groups": [roles.MANAGERS, roles.REPS]},
    {"user__groups": [roles.OPS, roles.REPS]},
    {"user__groups": [roles.REPS], "user__is_staff": True},
    {"user__groups": [roles.REPS], "user__is_superuser": True},
], ids=["manager", "ops", "staff", "superuser"])
def test_a_manager_cannot_set_the_password_of_someone_who_is_more_than_a_rep(manager_client, more):
    """Setting it would let the manager act as them."""
    colleague = RepFactory(user__username="more-than-a-rep", **more)
    before = colleague.user.password

    response = manager_client.post(f"{CHANGELIST}{colleague.pk}/password/",
                                   {"new_password1": "Takeover-2026-x", "new_password2": "Takeover-2026-x"})

    assert response.status_code == 403
    colleague.user.refresh_from_db()
    assert colleague.user.password == before


def test_a_rep_cannot_reach_the_password_page(rep_client, rep):
    response = rep_client.get(f"{CHANGELIST}{rep.pk}/password/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
