from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("speed/", views.speed, name="speed"),
    path("sla/", views.sla, name="sla"),
    path("conversion/", views.conversion, name="conversion"),
    path("fairness/", views.fairness, name="fairness"),
    path("me/", views.me, name="me"),
    path("export/<slug:name>.csv", views.export, name="export"),
]
