"""Admin for intake: tokens are issued once, stored hashed, and can be revoked."""

from __future__ import annotations

import re

import pytest

from routing.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw-secret-123"))
    return client


def test_revoking_in_the_admin_stops_the_token(admin_client, ops_user):
    token, raw = ApiToken.issue(ops_user, name="crm")

    admin_client.post("/admin/routing/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})

    token.refresh_from_db()
    assert token.revoked_at is not None
    assert ApiToken.lookup(raw) is None


def test_adding_a_token_in_the_admin_shows_the_secret_once(admin_client, ops_user):
    resp = admin_client.post("/admin/routing/apitoken/add/", {"user": ops_user.pk, "name": "forms", "scope": "intake"},
                             follow=True)

    raw = re.search(r"(lo_[\w-]+)", resp.content.decode()).group(1)
    token = ApiToken.lookup(raw)
    assert token is not None and (token.name, token.scope) == ("forms", "intake")


def test_the_import_history_is_listed_in_the_admin(admin_client):
    assert admin_client.get("/admin/routing/importjob/").status_code == 200
