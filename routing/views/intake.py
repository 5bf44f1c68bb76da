from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from leadops.roles import ops_required
from routing.models import ImportJob


@ops_required
def intake_home(request: HttpRequest) -> HttpResponse:
    jobs = ImportJob.objects.all()[:20]
    return TemplateResponse(request, "routing/intake.html", {"jobs": jobs})
