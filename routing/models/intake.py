"""Intake bookkeeping: CSV import jobs, API tokens (hashed) and idempotency records."""

from __future__ import annotations

import functools
import hashlib
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, models

from leadops import sqlrows


class ImportJob(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        RUNNING = "running", "Importing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    file = models.FileField(upload_to="imports/%Y/%m/")
    original_name = models.CharField(max_length=255)
    source = models.CharField(max_length=100, blank=True)
    mapping = models.JSONField(default=dict, blank=True, help_text="CSV header → lead field")
    encoding = models.CharField(
        max_length=20, blank=True, help_text="How the whole file's lines are read (routing.csvio.scan_encoding)."
    )
    route = models.BooleanField(default=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    total_rows = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    merged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    assigned = models.PositiveIntegerField(default=0)
    pooled = models.PositiveIntegerField(default=0)
    unassigned = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When the user confirmed the mapping.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.get_status_display()})"

    @property
    def awaiting_confirmation(self) -> bool:
        return self.status == self.Status.PENDING and self.queued_at is None

    @property
    def in_progress(self) -> bool:
        return self.status == self.Status.RUNNING or (self.status == self.Status.PENDING and self.queued_at is not None)

    @property
    def percent(self) -> int:
        return int(100 * self.rows_done / self.total_rows) if self.total_rows else (100 if self.status == "done" else 0)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token acting as its user. Only the SHA-256 of the secret is stored."""

    class Scope(models.TextChoices):
        FULL = "full", "Everything the user may do"
        INTAKE = "intake", "Create leads only"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="Shown as the source of leads it creates.")
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.FULL)
    prefix = models.CharField(max_length=12, db_index=True, help_text="First characters, to recognise it.")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user, name: str = "", scope: str = "full") -> tuple[ApiToken, str]:
        raw = "lo_" + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name or f"{user.username} token", scope=scope, prefix=raw[:10], token_hash=hash_token(raw)
        )
        return token, raw

    @classmethod
    def lookup(cls, raw: str) -> ApiToken | None:
        """The live token with this secret, its user, and the user's group names (`group_names`) —
        one query, a row per group, for the role checks every API call starts with. Plain SQL
        (leadops.sqlrows): compiling the ORM's version of this join was a sixth of an API POST's CPU.
        The user model must keep its fields in its own table (Django's, or one built on AbstractUser)."""
        user_model = get_user_model()
        with connection.cursor() as cursor:
            cursor.execute(_lookup_sql(connection.vendor), [hash_token(raw), True])
            rows = cursor.fetchall()
        if not rows:
            return None
        n = sqlrows.width(cls)
        token = sqlrows.instance(cls, rows[0][:n])
        token.user = sqlrows.instance(user_model, rows[0][n:-1])
        token.group_names = sorted({row[-1] for row in rows if row[-1]})
        return token


@functools.cache
def _lookup_sql(vendor: str) -> str:
    q, col = connection.ops.quote_name, sqlrows.column
    user_model = get_user_model()
    groups = user_model._meta.get_field("groups")  # the join table's own names, as the ORM's join uses them
    group_model = groups.related_model
    token, user, group = ApiToken._meta, user_model._meta, group_model._meta
    return (
        f"SELECT {sqlrows.columns(ApiToken, 't')}, {sqlrows.columns(user_model, 'u')}, g.{col(group_model, 'name')}"
        f" FROM {q(token.db_table)} t"
        f" JOIN {q(user.db_table)} u ON u.{q(user.pk.column)} = t.{col(ApiToken, 'user')}"
        f" LEFT JOIN {q(groups.m2m_db_table())} ug ON ug.{q(groups.m2m_column_name())} = u.{q(user.pk.column)}"
        f" LEFT JOIN {q(group.db_table)} g ON g.{q(group.pk.column)} = ug.{q(groups.m2m_reverse_name())}"
        f" WHERE t.{col(ApiToken, 'token_hash')} = %s AND t.{col(ApiToken, 'revoked_at')} IS NULL"
        f" AND u.{col(user_model, 'is_active')} = %s"
    )


class IdempotencyRecord(models.Model):
    """The first response to an `Idempotency-Key`, replayed for repeats with the same body."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    body_hash = models.CharField(max_length=64)
    lead = models.ForeignKey("routing.Lead", null=True, on_delete=models.CASCADE, related_name="+")
    response = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="unique_idempotency_key")]

    def __str__(self) -> str:
        return self.key
