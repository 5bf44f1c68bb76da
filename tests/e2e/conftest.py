"""Browser fixtures: Debian's Chromium driven by Playwright against pytest-django's live_server.

Pages log in by session cookie (a forced login on the test client) rather than through the login
form, which keeps each test to the behaviour it is about.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import CHROMIUM

# Playwright's sync API runs an asyncio loop in this thread; the ORM calls the tests make around it
# are still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="session")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def logged_in(browser, live_server):
    """logged_in(user) -> a Playwright page in its own browser context, signed in as `user`."""
    contexts = []

    def open_page(user, path: str = "/"):
        client = Client()
        client.force_login(user)
        context = browser.new_context(base_url=live_server.url)
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME,
                              "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                              "url": live_server.url}])
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.goto(path)
        return page

    yield open_page
    for context in contexts:
        context.close()
