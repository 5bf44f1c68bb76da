import pytest

from reports import selectors
from routing.models import LeadEvent
from tests.factories import RepFactory
from tests.reports.conftest import NOW, answered_lead, minutes

pytestmark = pytest.mark.django_db


def _sla_lead(touch_after, due_after, **fields):
    received = NOW - minutes(300)
    return answered_lead(received, touch_after, sla_due_at=received + minutes(due_after), **fields)


def test_it_counts_on_time_late_and_overdue_leads_in_the_hit_rate(scope_for):
    _sla_lead(4, 5)  # hit
    _sla_lead(9, 5)  # touched late
    _sla_lead(None, 5)  # never touched, long past due
    _sla_lead(None, 600)  # still running: neither hit nor missed
    total = selectors.sla_total(scope_for())
    assert (total["with_sla"], total["hit"], total["missed"]) == (4, 1, 2)
    assert total["hit_rate"] == pytest.approx(1 / 3)


def test_it_counts_an_escalated_lead_as_missed_even_if_touched_in_time_after_reassignment(scope_for):
    _sla_lead(4, 5, escalation_step=1)
    assert selectors.sla_total(scope_for())["hit_rate"] == 0


def test_it_attributes_breaches_to_the_rep_who_held_the_lead(scope_for):
    slow, rescuer = RepFactory(user__username="slow"), RepFactory(user__username="rescuer")
    lead = _sla_lead(30, 5, owner=rescuer, escalation_step=2)
    for kind, step in [("sla_breached", None), ("escalated", 1), ("escalated", 2)]:
        LeadEvent.objects.create(lead=lead, kind=kind, rep=slow, at=NOW - minutes(290),
                                 detail={"step": step} if step else {})
    rows = {r["key"]: r for r in selectors.sla_by(scope_for(), "rep")}
    assert (rows[slow.pk]["breaches"], rows[slow.pk]["escalations"]) == (1, 2)
    assert rows[rescuer.pk]["breaches"] == 0


def test_it_lists_overdue_leads_with_their_ladder_step(scope_for):
    late = _sla_lead(None, 5, escalation_step=2)
    _sla_lead(4, 5)
    _sla_lead(None, 600)
    rows = selectors.overdue_leads(scope_for())
    assert [(r["lead_id"], r["escalation_step"]) for r in rows] == [(late.pk, 2)]
    assert rows[0]["overdue_seconds"] == pytest.approx(295 * 60)


def test_it_lists_overdue_leads_whatever_the_date_range(scope_for):
    old = answered_lead(NOW - minutes(60 * 24 * 40), None, sla_due_at=NOW - minutes(60 * 24 * 39))
    assert [r["lead_id"] for r in selectors.overdue_leads(scope_for(days=7))] == [old.pk]


def test_it_leaves_closed_leads_off_the_overdue_list(scope_for):
    _sla_lead(None, 5, status="lost")
    assert selectors.overdue_leads(scope_for()) == []
