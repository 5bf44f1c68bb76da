"""Rule sets: versioned, immutable once published. Round-robin/weighted state lives in RuleCursor."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class RuleSet(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        ARCHIVED = "archived", "Archived"

    name = models.CharField(max_length=200)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    fallback = models.JSONField(
        null=True, blank=True, help_text="{'candidates': {...}, 'strategy': ...} or null for none."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["version"], name="unique_ruleset_version"),
            # At most one version is in force.
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="published"), name="one_published_ruleset"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.get_status_display()})"

    @property
    def is_editable(self) -> bool:
        return self.status == self.Status.DRAFT


class Rule(models.Model):
    class Strategy(models.TextChoices):
        ROUND_ROBIN = "round_robin", "Round robin"
        WEIGHTED = "weighted", "Weighted"
        LOAD_BALANCED = "load_balanced", "Load balanced"
        FIRST_AVAILABLE = "first_available", "First available"
        PREDICTIVE = "predictive", "Predictive"

    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    # Conditions as in the rule file: [{"field", "op", "value"}]; `match_any` means `when_any`.
    conditions = models.JSONField(default=list, blank=True)
    match_any = models.BooleanField(default=False)
    candidates = models.JSONField(default=dict, blank=True)
    strategy = models.CharField(max_length=20, choices=Strategy.choices, blank=True)
    pool = models.ForeignKey(
        "routing.Pool", null=True, blank=True, on_delete=models.PROTECT, related_name="rules"
    )
    sla_minutes = models.PositiveIntegerField(null=True, blank=True)
    escalate_to = models.JSONField(default=list, blank=True)
    # Ladder steps after a missed SLA, e.g. ["remind", "reassign", "notify"]; empty = the default ladder.
    ladder = models.JSONField(default=list, blank=True)
    max_reassignments = models.PositiveSmallIntegerField(null=True, blank=True)
    # The rule set's `fallback` is stored as its last rule so leads can point at it (SLA, reports).
    is_fallback = models.BooleanField(default=False)

    class Meta:
        ordering = ["rule_set", "position"]
        constraints = [models.UniqueConstraint(fields=["rule_set", "position"], name="unique_rule_position")]

    def __str__(self) -> str:
        return self.name

    @property
    def cursor_key(self) -> str:
        """Pointers belong to the rule's name so that publishing a new version keeps the rotation."""
        from routing.engine import FALLBACK_KEY

        return FALLBACK_KEY if self.is_fallback else self.name

    def to_data(self) -> dict:
        """This rule in the rule-file format (routing.rulefile canonicalises key order)."""
        out: dict = {}
        if not self.is_fallback:
            out["name"] = self.name
            if self.conditions:
                out["when_any" if self.match_any else "when"] = self.conditions
        if self.pool_id:
            out["pool"] = self.pool.name
        else:
            out["candidates"] = self.candidates
            out["strategy"] = self.strategy
        for key in ("sla_minutes", "max_reassignments"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.escalate_to:
            out["escalate_to"] = self.escalate_to
        if self.ladder:
            out["ladder"] = self.ladder
        return out


class RuleCursor(models.Model):
    """Persistent rotation state of one rule: the last rep given a lead, and smooth-weighted credits.

    Locked with select_for_update while a decision is applied, so two workers cannot both take
    the same turn.
    """

    key = models.CharField(max_length=200, unique=True)
    last_rep = models.ForeignKey("reps.Rep", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key
