"""Shared pools reps claim leads from (pull distribution)."""

from __future__ import annotations

from django.db import models


class Pool(models.Model):
    class Mode(models.TextChoices):
        CHERRY_PICK = "cherry_pick", "Cherry-pick"
        SHOTGUN = "shotgun", "Shotgun"

    class OnTimeout(models.TextChoices):
        SHOTGUN = "shotgun", "Announce to all (shotgun)"
        PUSH = "push", "Push (load balanced)"
        ESCALATE = "escalate", "Tell the pool managers"
        STAY = "stay", "Stay in the pool"

    name = models.CharField(max_length=100, unique=True)
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.CHERRY_PICK)
    members = models.ManyToManyField("reps.Rep", through="PoolMembership", related_name="pools", blank=True)
    managers = models.ManyToManyField("reps.Rep", related_name="managed_pools", blank=True)
    claim_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most open leads a member may hold from this pool; empty = no limit."
    )
    daily_claim_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most claims per member in 24 hours; empty = no cap."
    )
    window_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Minutes a lead may wait unclaimed before the timeout action."
    )
    on_timeout = models.CharField(max_length=10, choices=OnTimeout.choices, default=OnTimeout.STAY)
    sla_minutes = models.PositiveIntegerField(null=True, blank=True, help_text="First-touch SLA after a claim.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PoolMembership(models.Model):
    """A rep's seat in a pool. Its row is locked while a claim checks the member's limit."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="memberships")
    rep = models.ForeignKey("reps.Rep", on_delete=models.CASCADE, related_name="pool_memberships")
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pool", "rep"], name="unique_pool_member")]

    def __str__(self) -> str:
        return f"{self.rep} in {self.pool}"


class PoolAnnouncement(models.Model):
    """One member told about one waiting lead (shotgun). The board's banner reads these rows, so a
    rep only sees what was actually announced to them — never leads announced while they were away."""

    lead = models.ForeignKey("routing.Lead", on_delete=models.CASCADE, related_name="announcements")
    rep = models.ForeignKey("reps.Rep", on_delete=models.CASCADE, related_name="announcements")
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="announcements")
    at = models.DateTimeField()

    class Meta:
        ordering = ["-at"]
        constraints = [models.UniqueConstraint(fields=["lead", "rep"], name="unique_announcement")]
        indexes = [models.Index(fields=["rep", "at"], name="announcement_rep_at")]

    def __str__(self) -> str:
        return f"lead {self.lead_id} → {self.rep}"
