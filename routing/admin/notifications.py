"""Notifications in the admin: the outbox, with dead letters and a retry action."""

from __future__ import annotations

from django.contrib import admin, messages

from routing.models import Notification
from routing.notify import notifications_retry


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["kind", "recipient", "to", "channel", "status", "attempts", "next_attempt_at", "sent_at", "lead"]
    list_filter = ["status", "channel", "kind"]
    search_fields = ["recipient__user__username", "lead__email", "last_error"]
    list_select_related = ["recipient__user", "lead"]
    date_hierarchy = "created_at"
    actions = ["retry"]
    readonly_fields = ["recipient", "lead", "channel", "kind", "payload", "attempts", "last_error", "created_at",
                       "sent_at"]
    fields = ["recipient", "lead", "channel", "kind", "status", "attempts", "next_attempt_at", "last_error",
              "payload", "created_at", "sent_at"]

    @admin.display(description="To")
    def to(self, obj: Notification) -> str:
        return obj.payload.get("to") or ("webhook" if obj.channel == Notification.Channel.WEBHOOK else "")

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Retry the selected dead or failed notifications now", permissions=["change"])
    def retry(self, request, queryset) -> None:
        count = notifications_retry(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} notification(s) queued again.", messages.SUCCESS)
