from django.contrib import admin

from routing.models import Lead


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "owner", "source", "country", "received_at"]
