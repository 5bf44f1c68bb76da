import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_login_page_renders_for_anonymous_users(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Log in" in response.content


def test_it_sends_reps_to_their_board_after_login(client, rep):
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-secret-123"}, follow=True)
    assert response.redirect_chain[-1][0] == "/board/"
    assert b"Your board" in response.content


def test_it_sends_managers_to_the_dashboard(manager_client):
    response = manager_client.get("/", follow=True)
    assert response.redirect_chain[-1][0] == "/reports/"


def test_it_sends_ops_staff_to_intake(ops_client):
    response = ops_client.get("/", follow=True)
    assert response.redirect_chain[-1][0] == "/intake/"


@pytest.mark.parametrize("path", ["/board/", "/intake/", "/reports/"])
def test_anonymous_users_are_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_rep_cannot_open_intake_or_reports(rep_client):
    assert rep_client.get("/intake/").status_code == 403
    assert rep_client.get("/reports/").status_code == 403


def test_a_refusal_is_a_page_with_the_way_back_not_a_bare_403(rep_client):
    response = rep_client.get("/reports/")

    assert response.status_code == 403
    body = response.content.decode()
    assert "This page is not open to you" in body and 'href="/"' in body  # back to their own start page


def test_ops_staff_cannot_open_the_board_or_reports(ops_client):
    assert ops_client.get("/board/").status_code == 403
    assert ops_client.get("/reports/").status_code == 403


def test_groups_exist_with_permissions_after_migrate(db):
    from django.contrib.auth.models import Group

    managers = Group.objects.get(name="Managers")
    assert managers.permissions.filter(codename="reassign_lead").exists()
    assert Group.objects.filter(name__in=["Reps", "Ops"]).count() == 2
