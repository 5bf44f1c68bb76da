"""Shared fixtures: users per role, logged-in clients, and a database-vendor switch."""

from __future__ import annotations

import os

import pytest
from django.core.cache import cache
from django.db import connection

from leadops import roles
from tests.factories import RepFactory, UserFactory

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def _empty_cache():
    """Django's cache (the admin's filter values) starts empty for every test."""
    cache.clear()


@pytest.fixture
def manager(db):
    return UserFactory(username="manager", groups=[roles.MANAGERS], is_staff=True)


@pytest.fixture
def ops_user(db):
    return UserFactory(username="ops", groups=[roles.OPS])


@pytest.fixture
def rep(db):
    return RepFactory(user__username="alice")


@pytest.fixture
def other_rep(db):
    return RepFactory(user__username="bob")


@pytest.fixture
def rep_client(client, rep):
    client.force_login(rep.user)
    return client


@pytest.fixture
def manager_client(client, manager):
    client.force_login(manager)
    return client


@pytest.fixture
def ops_client(client, ops_user):
    client.force_login(ops_user)
    return client


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.postgres` tests need real row locks: skipped on SQLite, required on PostgreSQL.
    `@pytest.mark.e2e` tests need /usr/bin/chromium: skipped without it unless
    LEADOPS_REQUIRE_BROWSER=1 (CI sets it on PostgreSQL), in which case they fail loudly."""
    from django.conf import settings

    sqlite = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    no_browser = not os.path.exists(CHROMIUM) and os.environ.get("LEADOPS_REQUIRE_BROWSER") != "1"
    for item in items:
        if sqlite and "postgres" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (real row locks and concurrency)"))
        if no_browser and "e2e" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"{CHROMIUM} not installed"))
