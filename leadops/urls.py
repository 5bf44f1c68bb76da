from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from leadops import views
from leadops.api import api

admin.site.site_header = "LeadOps — managers"
admin.site.site_title = "LeadOps"
admin.site.index_title = "Distribution control room"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz/", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("reports/", include("reports.urls")),
    path("", include("routing.urls")),
]
