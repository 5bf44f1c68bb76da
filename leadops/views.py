from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from leadops import roles


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Each role lands on its own home: managers the dashboard, reps the board, ops the intake."""
    return redirect(roles.home_url(request.user))


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True, "database": connection.vendor})
