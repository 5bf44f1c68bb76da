from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from leadops.roles import manager_required
from routing.models import Lead


@manager_required
def dashboard(request: HttpRequest) -> HttpResponse:
    counts = {s: Lead.objects.filter(status=s).count() for s in Lead.OPEN_STATUSES}
    return TemplateResponse(request, "reports/dashboard.html", {"counts": counts})
