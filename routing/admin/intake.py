"""Admin for intake: API tokens (issue, revoke) and the CSV import history."""

from __future__ import annotations

import secrets

from django.contrib import admin, messages
from django.utils import timezone

from routing.models import ApiToken, ImportJob
from routing.models.intake import hash_token


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "scope", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username", "prefix"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "name", "scope"]
        return ["user", "name", "scope", "prefix", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        # A token's secret and owner never change: revoke it and issue a new one instead.
        return [] if obj is None else ["user", "prefix", "created_at", "last_used_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            raw = "lo_" + secrets.token_urlsafe(32)
            obj.prefix, obj.token_hash = raw[:10], hash_token(raw)
            obj.name = obj.name or f"{obj.user.username} token"
            super().save_model(request, obj, form, change)
            messages.warning(request, f"New token (shown once, copy it now): {raw}")
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        n = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        messages.success(request, f"Revoked {n} token(s).")


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["original_name", "status", "total_rows", "created", "merged", "failed", "created_by", "created_at"]
    list_select_related = ["created_by"]
    list_filter = ["status"]
    search_fields = ["original_name", "source"]
    readonly_fields = [f.name for f in ImportJob._meta.fields]

    def has_add_permission(self, request):
        return False  # imports start from /intake/, which runs them in the background
