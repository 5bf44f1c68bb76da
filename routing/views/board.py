from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from leadops.roles import rep_required
from routing.models import Lead


@rep_required
def board(request: HttpRequest) -> HttpResponse:
    rep = request.user.rep
    leads = Lead.objects.filter(owner=rep).open().order_by("sla_due_at", "-received_at")[:100]
    return TemplateResponse(request, "routing/board.html", {"rep": rep, "leads": leads})
