"""Outgoing notifications: one row per message, so nothing is sent twice or lost in a crash."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Notification(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"
        IN_APP = "in_app", "In app"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (will retry)"
        DEAD = "dead", "Dead letter"
        READ = "read", "Read"

    recipient = models.ForeignKey(
        "reps.Rep", null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    lead = models.ForeignKey(
        "routing.Lead", null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    kind = models.CharField(max_length=30, help_text="new_lead, announced, sla_reminder, escalated, pool_timeout…")
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="notification_due"),
            models.Index(fields=["recipient", "channel", "status"], name="notification_inbox"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} → {self.recipient} ({self.channel}, {self.status})"
