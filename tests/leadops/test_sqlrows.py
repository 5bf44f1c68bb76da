"""leadops.sqlrows: rows read with hand-written SQL become the same instances the ORM builds, on
either database (SQLite hands back datetimes as text and booleans as integers)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from leadops import sqlrows
from routing.models import ApiToken, Lead, RuleSet
from routing.selectors import published_ruleset
from routing.services import ruleset_create_draft, ruleset_publish
from tests.factories import LeadFactory, UserFactory

pytestmark = pytest.mark.django_db


def read_by_hand(model, pk):
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sqlrows.columns(model, 'x')} FROM {q(model._meta.db_table)} x WHERE x.id = %s", [pk])
        return sqlrows.instance(model, cursor.fetchone())


def values(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_a_lead_read_by_hand_equals_the_orms_in_every_field_and_type():
    lead = LeadFactory(value=Decimal("1250.50"), extra={"utm": "spring", "n": [1, 2]}, routing_held=True,
                       sla_due_at=timezone.now() + dt.timedelta(minutes=30))

    by_hand, by_orm = read_by_hand(Lead, lead.pk), Lead.objects.get(pk=lead.pk)

    assert values(by_hand) == values(by_orm)
    assert {k: type(v) for k, v in values(by_hand).items()} == {k: type(v) for k, v in values(by_orm).items()}
    assert by_hand.received_at.tzinfo is not None and by_hand.extra == {"utm": "spring", "n": [1, 2]}
    assert by_hand.routing_held is True and by_hand.value == Decimal("1250.50")


def test_an_instance_read_by_hand_saves_as_an_update():
    lead = read_by_hand(Lead, LeadFactory(company="Old GmbH").pk)
    lead.company = "New GmbH"
    lead.save()

    assert Lead.objects.count() == 1 and Lead.objects.get().company == "New GmbH"


def test_a_token_lookup_brings_its_user_and_every_group():
    user = UserFactory(username="both", groups=["Ops", "Managers"], last_login=timezone.now())
    token, raw = ApiToken.issue(user, name="crm", scope="intake")

    found = ApiToken.lookup(raw)

    assert values(found) == values(ApiToken.objects.get(pk=token.pk))
    assert values(found.user) == values(type(user).objects.get(pk=user.pk))
    assert found.user.is_active is True and found.user.last_login.tzinfo is not None
    assert found.group_names == ["Managers", "Ops"]
    assert ApiToken.lookup(ApiToken.issue(UserFactory(username="none"))[1]).group_names == []


def test_no_token_for_a_wrong_secret_or_an_inactive_user():
    user = UserFactory(username="gone")
    _, raw = ApiToken.issue(user)
    assert ApiToken.lookup(raw + "x") is None

    user.is_active = False
    user.save()
    assert ApiToken.lookup(raw) is None


def test_the_published_rule_set_is_read_whole():
    assert published_ruleset() is None
    rule_set = ruleset_publish(ruleset_create_draft({
        "name": "Simple", "rules": [{"name": "All", "when": [], "candidates": {"levels": ["junior"]},
                                     "strategy": "round_robin"}],
    }))

    loaded = published_ruleset()

    assert values(loaded.rule_set) == values(RuleSet.objects.get(pk=rule_set.pk))
    assert [rule.name for rule in loaded.compiled.rules] == ["All"]
