"""Notifications: who gets what on which channel, delivered exactly once, retried with backoff,
dead-lettered, and never sent for a change that was rolled back."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction

from reps.models import Team
from routing.models import Lead, LeadEvent, Notification
from routing.notify import deliver_pending, in_quiet_hours_until, lead_notify, notification_deliver
from routing.sla import sweep_overdue
from tests.factories import LeadFactory, RepFactory
from tests.routing.test_sla import at

NOW = at("2026-11-23T10:00:00+00:00")


class Webhook:
    """A local Slack-compatible endpoint: records each JSON body, answers with `status` after `delay`."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.status = 200
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(length)))
                time.sleep(hook.delay)
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def owned_lead(rep, **kwargs) -> Lead:
    return LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, assigned_at=NOW, **kwargs)


def channels(lead: Lead) -> set[str]:
    return set(Notification.objects.filter(lead=lead).values_list("channel", flat=True))


# -- who and where --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_new_lead_notifies_its_owner_in_app_by_email_and_by_webhook(webhook):
    rep = RepFactory(slack_webhook_url=webhook.url)
    lead = owned_lead(rep)

    lead_notify(lead.pk, "assigned", now=NOW)

    assert channels(lead) == {"in_app", "email", "webhook"}
    assert set(Notification.objects.filter(lead=lead).values_list("recipient", flat=True)) == {rep.pk}


@pytest.mark.django_db
def test_the_teams_webhook_is_used_when_the_rep_has_none(webhook):
    rep = RepFactory(team=Team.objects.create(name="EMEA", slack_webhook_url=webhook.url))
    lead = owned_lead(rep)

    lead_notify(lead.pk, "assigned", now=NOW)

    assert Notification.objects.get(lead=lead, channel="webhook").payload["webhook_url"] == webhook.url


@pytest.mark.django_db
def test_telling_the_owner_reads_the_lead_and_its_owner_once(webhook, django_assert_num_queries,
                                                              django_capture_on_commit_callbacks):
    """Every routed API lead tells its owner while the rule cursors are held: the owner, their team's
    webhook and their email come with the lead, and the rows are written in one INSERT."""
    rep = RepFactory(team=Team.objects.create(name="EMEA", slack_webhook_url=webhook.url))
    lead = owned_lead(rep)

    with django_capture_on_commit_callbacks(), django_assert_num_queries(2):  # the read, the INSERT
        lead_notify(lead.pk, "assigned", now=NOW)

    assert Notification.objects.get(lead=lead, channel="webhook").payload["webhook_url"] == webhook.url
    assert Notification.objects.get(lead=lead, channel="email").payload["to"] == rep.user.email


@pytest.mark.django_db
def test_a_rep_who_turned_off_email_and_webhooks_still_gets_the_in_app_notification(webhook):
    rep = RepFactory(slack_webhook_url=webhook.url, notify_email=False, notify_webhook=False)
    lead = owned_lead(rep)

    lead_notify(lead.pk, "assigned", now=NOW)

    assert channels(lead) == {"in_app"}


@pytest.mark.django_db
def test_announcements_go_to_the_given_reps():
    alice, bob, _carol = RepFactory(), RepFactory(), RepFactory()
    lead = LeadFactory(status=Lead.Status.POOLED)

    lead_notify(lead.pk, "announced", rep_ids=[alice.pk, bob.pk], now=NOW)

    assert set(Notification.objects.filter(lead=lead).values_list("recipient", flat=True)) == {alice.pk, bob.pk}


@pytest.mark.django_db
def test_the_email_names_the_lead_and_links_to_it(rep, mailoutbox):
    lead = owned_lead(rep, first_name="Ada", last_name="Lovelace", company="Engines Ltd")

    lead_notify(lead.pk, "assigned", now=NOW)
    deliver_pending(NOW)

    (mail,) = mailoutbox
    assert mail.to == [rep.user.email]
    assert "Ada Lovelace" in mail.body
    assert f"http://127.0.0.1:8000/board/leads/{lead.pk}/" in mail.body


# -- delivery ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_delivery_writes_a_notified_event_and_stamps_the_lead_once(rep, mailoutbox):
    lead = owned_lead(rep)

    lead_notify(lead.pk, "assigned", now=NOW)
    deliver_pending(NOW + dt.timedelta(seconds=3))
    lead_notify(lead.pk, "sla_reminder", now=NOW + dt.timedelta(minutes=20))
    deliver_pending(NOW + dt.timedelta(minutes=20))

    lead.refresh_from_db()
    assert lead.notified_at == NOW + dt.timedelta(seconds=3)
    notified = lead.events.filter(kind=LeadEvent.Kind.NOTIFIED)
    assert [(e.detail["channel"], e.detail["about"]) for e in notified] == [
        ("email", "assigned"), ("email", "sla_reminder"),
    ]


@pytest.mark.django_db
def test_a_rep_reachable_only_in_app_counts_as_notified_at_once():
    rep = RepFactory(user__email="")
    lead = owned_lead(rep)

    lead_notify(lead.pk, "assigned", now=NOW)

    lead.refresh_from_db()
    assert lead.notified_at == NOW
    assert lead.events.get(kind=LeadEvent.Kind.NOTIFIED).detail["channel"] == "in_app"


@pytest.mark.django_db
def test_tasks_run_synchronously_in_tests_and_deliver_on_commit(rep, mailoutbox, django_capture_on_commit_callbacks):
    lead = owned_lead(rep)

    with django_capture_on_commit_callbacks(execute=True):
        lead_notify(lead.pk, "assigned")

    assert len(mailoutbox) == 1
    assert Notification.objects.get(lead=lead, channel="email").status == Notification.Status.SENT


@pytest.mark.django_db
def test_a_notification_whose_worker_died_is_sent_once_by_the_next_sweep(rep, mailoutbox):
    lead = owned_lead(rep)
    # The change committed and its rows were written, but no task ever ran (worker killed).
    lead_notify(lead.pk, "assigned", now=NOW)
    email = Notification.objects.get(lead=lead, channel="email")
    assert email.status == Notification.Status.PENDING

    sweep_overdue(NOW + dt.timedelta(minutes=1))
    # The task finally runs after a restart, and the sweep runs again: neither sends it twice.
    assert notification_deliver(email.pk, now=NOW + dt.timedelta(minutes=2)) == "skipped"
    sweep_overdue(NOW + dt.timedelta(minutes=2))

    assert len(mailoutbox) == 1
    email.refresh_from_db()
    assert email.status == Notification.Status.SENT
    assert email.attempts == 1
    assert lead.events.filter(kind=LeadEvent.Kind.NOTIFIED).count() == 1


@pytest.mark.django_db
def test_a_send_interrupted_mid_flight_is_retried_after_its_lease(rep, mailoutbox):
    lead = owned_lead(rep)
    lead_notify(lead.pk, "assigned", now=NOW)
    email = Notification.objects.get(lead=lead, channel="email")
    # Claimed by a worker that then died before it could record the outcome.
    Notification.objects.filter(pk=email.pk).update(
        status=Notification.Status.SENDING, attempts=1, next_attempt_at=NOW + dt.timedelta(minutes=5)
    )

    assert deliver_pending(NOW + dt.timedelta(minutes=4))["delivered"] == 0
    assert deliver_pending(NOW + dt.timedelta(minutes=5))["delivered"] == 1
    assert len(mailoutbox) == 1


@pytest.mark.django_db
def test_the_webhook_receives_slack_compatible_json_with_a_link_to_the_lead(webhook):
    rep = RepFactory(slack_webhook_url=webhook.url, notify_email=False)
    lead = owned_lead(rep, first_name="Grace", last_name="Hopper")

    lead_notify(lead.pk, "assigned", now=NOW)
    deliver_pending(NOW)

    (body,) = webhook.bodies
    assert list(body) == ["text"]
    assert "Grace Hopper" in body["text"]
    assert f"http://127.0.0.1:8000/board/leads/{lead.pk}/" in body["text"]
    assert Notification.objects.get(lead=lead, channel="webhook").status == Notification.Status.SENT


@pytest.mark.django_db
def test_a_failing_webhook_is_retried_with_backoff_then_dead_lettered(webhook, settings):
    settings.NOTIFY_MAX_ATTEMPTS = 3
    webhook.status = 500
    rep = RepFactory(slack_webhook_url=webhook.url, notify_email=False)
    lead = owned_lead(rep)
    lead_notify(lead.pk, "assigned", now=NOW)
    hook = Notification.objects.get(lead=lead, channel="webhook")

    assert notification_deliver(hook.pk, now=NOW) == Notification.Status.FAILED
    hook.refresh_from_db()
    assert (hook.attempts, hook.next_attempt_at) == (1, NOW + dt.timedelta(seconds=30))
    assert "HTTP 500" in hook.last_error

    deliver_pending(NOW + dt.timedelta(seconds=29))
    assert len(webhook.bodies) == 1

    deliver_pending(NOW + dt.timedelta(seconds=30))
    hook.refresh_from_db()
    assert (hook.attempts, hook.next_attempt_at) == (2, NOW + dt.timedelta(seconds=90))

    deliver_pending(NOW + dt.timedelta(seconds=90))
    deliver_pending(NOW + dt.timedelta(hours=5))
    hook.refresh_from_db()
    assert hook.status == Notification.Status.DEAD
    assert hook.attempts == 3
    assert len(webhook.bodies) == 3
    assert lead.events.filter(kind=LeadEvent.Kind.NOTIFIED).count() == 0


@pytest.mark.django_db
def test_a_webhook_that_times_out_is_recorded_as_failed(webhook, settings):
    settings.NOTIFY_WEBHOOK_TIMEOUT = 0.2
    webhook.delay = 1.0
    rep = RepFactory(slack_webhook_url=webhook.url, notify_email=False)
    lead = owned_lead(rep)
    lead_notify(lead.pk, "assigned", now=NOW)

    assert deliver_pending(NOW)["delivered"] == 0

    hook = Notification.objects.get(lead=lead, channel="webhook")
    assert hook.status == Notification.Status.FAILED
    assert "timed out" in hook.last_error


@pytest.mark.django_db
def test_a_dead_webhook_never_blocks_the_escalation_sweep(webhook, settings):
    settings.NOTIFY_WEBHOOK_TIMEOUT = 0.2
    webhook.status = 500
    rep = RepFactory(slack_webhook_url=webhook.url)
    lead = owned_lead(rep, sla_due_at=NOW)

    result = sweep_overdue(NOW)

    lead.refresh_from_db()
    assert result["escalated"] == 1
    assert lead.escalation_step == 1
    assert Notification.objects.get(lead=lead, channel="webhook").status == Notification.Status.FAILED


@pytest.mark.django_db
def test_managers_can_retry_a_dead_letter_from_the_admin(rep, manager_client, mailoutbox,
                                                          django_capture_on_commit_callbacks):
    lead = owned_lead(rep)
    lead_notify(lead.pk, "assigned", now=NOW)
    dead = Notification.objects.get(lead=lead, channel="email")
    Notification.objects.filter(pk=dead.pk).update(status=Notification.Status.DEAD, attempts=5, last_error="boom")

    with django_capture_on_commit_callbacks(execute=True):
        response = manager_client.post(
            "/admin/routing/notification/", {"action": "retry", "_selected_action": [dead.pk]}
        )

    assert response.status_code == 302
    dead.refresh_from_db()
    assert dead.status == Notification.Status.SENT
    assert len(mailoutbox) == 1


@pytest.mark.django_db
def test_dead_letters_are_listed_in_the_admin(rep, manager_client):
    lead = owned_lead(rep)
    lead_notify(lead.pk, "assigned", now=NOW)
    Notification.objects.filter(lead=lead, channel="email").update(status=Notification.Status.DEAD)

    response = manager_client.get("/admin/routing/notification/?status__exact=dead")

    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


# -- quiet hours ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_quiet_hours_hold_email_until_they_end_in_the_reps_time_zone(mailoutbox):
    rep = RepFactory(timezone="Europe/Berlin", quiet_start=dt.time(20, 0), quiet_end=dt.time(7, 0))
    lead = owned_lead(rep)
    ten_pm_berlin = at("2026-11-23T22:00:00+01:00")

    lead_notify(lead.pk, "assigned", now=ten_pm_berlin)

    assert Notification.objects.get(lead=lead, channel="in_app").status == Notification.Status.SENT
    seven_am_berlin = at("2026-11-24T07:00:00+01:00")
    assert Notification.objects.get(lead=lead, channel="email").next_attempt_at == seven_am_berlin
    deliver_pending(seven_am_berlin - dt.timedelta(minutes=1))
    assert mailoutbox == []
    deliver_pending(seven_am_berlin)
    assert len(mailoutbox) == 1


@pytest.mark.django_db
def test_quiet_hours_within_one_day_end_the_same_day():
    rep = RepFactory(timezone="America/New_York", quiet_start=dt.time(12, 0), quiet_end=dt.time(13, 0))

    assert in_quiet_hours_until(rep, at("2026-11-23T12:30:00-05:00")) == at("2026-11-23T13:00:00-05:00")
    assert in_quiet_hours_until(rep, at("2026-11-23T13:00:00-05:00")) is None


@pytest.mark.django_db
def test_quiet_hours_past_midnight_end_the_same_morning_when_it_is_already_after_midnight():
    rep = RepFactory(quiet_start=dt.time(20, 0), quiet_end=dt.time(7, 0))

    assert in_quiet_hours_until(rep, at("2026-11-24T03:00:00+00:00")) == at("2026-11-24T07:00:00+00:00")


# -- rolled back changes ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_assignment_leaves_no_notification(mailoutbox):
    rep = RepFactory()
    lead = LeadFactory()

    with pytest.raises(RuntimeError), transaction.atomic():
        Lead.objects.filter(pk=lead.pk).update(owner=rep, status=Lead.Status.ASSIGNED)
        transaction.on_commit(lambda: lead_notify(lead.pk, "assigned"))
        raise RuntimeError("the assignment failed after the owner was written")

    assert Notification.objects.count() == 0
    assert mailoutbox == []


@pytest.mark.django_db(transaction=True)
def test_notifications_written_inside_a_rolled_back_transaction_disappear_with_it(mailoutbox):
    rep = RepFactory()
    lead = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED)

    with pytest.raises(RuntimeError), transaction.atomic():
        lead_notify(lead.pk, "sla_reminder")
        raise RuntimeError("the escalation step failed")

    assert Notification.objects.count() == 0
    assert mailoutbox == []


@pytest.mark.django_db(transaction=True)
def test_a_committed_assignment_is_delivered_right_after_commit(mailoutbox):
    rep = RepFactory()
    lead = LeadFactory()

    with transaction.atomic():
        Lead.objects.filter(pk=lead.pk).update(owner=rep, status=Lead.Status.ASSIGNED)
        transaction.on_commit(lambda: lead_notify(lead.pk, "assigned"))

    assert len(mailoutbox) == 1
    lead.refresh_from_db()
    assert lead.notified_at is not None
