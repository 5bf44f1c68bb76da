"""Lead and its timeline (LeadEvent). Every change of hands is an event in the same transaction."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor
from django.utils import timezone


class _ProvenanceDescriptor(ForwardManyToOneDescriptor):
    def __get__(self, instance, cls=None):
        try:
            return super().__get__(instance, cls)
        except ObjectDoesNotExist:
            self.field.set_cached_value(instance, None)  # one query per instance, as for a present row
            return None


class ProvenanceKey(models.ForeignKey):
    """A reference that records where something came from (who acted, which rule, which import), not a
    database constraint: every constraint queues a deferred trigger check on every inserted row, NULL or
    not, which was a third of a CSV import's commit. (django-simple-history keeps its history rows'
    references the same way.)

    Django still nulls the reference when the target is deleted (on_delete runs in the ORM), but a
    delete that races with a transaction still writing the reference can leave the id behind; reading
    such a reference gives None, as for an empty one, instead of raising."""

    forward_related_accessor_class = _ProvenanceDescriptor

    def __init__(self, *args, **kwargs):
        kwargs["db_constraint"] = False
        super().__init__(*args, **kwargs)


LEAD_FIELDS = [
    "email",
    "first_name",
    "last_name",
    "phone",
    "company",
    "title",
    "country",
    "region",
    "postcode",
    "industry",
    "company_size",
    "product",
    "source",
    "score",
    "priority",
    "value",
    "received_at",
    "extra",
]


class LeadQuerySet(models.QuerySet):
    def open(self) -> LeadQuerySet:
        return self.filter(status__in=Lead.OPEN_STATUSES)

    def waiting_in_pool(self) -> LeadQuerySet:
        return self.filter(status=Lead.Status.POOLED, owner__isnull=True)

    def for_rep(self, rep) -> LeadQuerySet:
        """The one rule for what a rep may see: their own leads (any status), and the leads still
        waiting, unclaimed, in a pool they are a member of. Anything else is hidden (404), so a rep
        learns nothing about other reps' leads or other pools from guessing ids."""
        from routing.models.pools import PoolMembership

        # A subquery rather than a join on memberships: the join repeats a lead once per member of its
        # pool, and the distinct() that hides the repeats makes every count and page sort the rows.
        my_pools = PoolMembership.objects.filter(rep=rep).values("pool_id")
        return self.filter(
            models.Q(owner=rep)
            | models.Q(status=Lead.Status.POOLED, owner__isnull=True, pool_id__in=my_pools)
        )

    def visible_to(self, user) -> LeadQuerySet:
        """Permission scope: managers see all, ops staff see all (they create and list), reps see
        for_rep(). A user with a Rep row but no longer in the Reps group sees nothing."""
        from leadops import roles

        if roles.is_manager(user) or roles.is_ops(user):
            return self
        if not roles.is_rep(user):
            return self.none()
        return self.for_rep(user.rep)


class Lead(models.Model):
    class Status(models.TextChoices):
        UNASSIGNED = "unassigned", "Unassigned"
        POOLED = "pooled", "In pool"
        ASSIGNED = "assigned", "Assigned"
        CONTACTED = "contacted", "Contacted"
        QUALIFIED = "qualified", "Qualified"
        WON = "won", "Won"
        LOST = "lost", "Lost"

    class Priority(models.TextChoices):
        NORMAL = "normal", "Normal"
        URGENT = "urgent", "Urgent"

    OPEN_STATUSES = ["unassigned", "pooled", "assigned", "contacted", "qualified"]
    # Statuses that count against a rep's capacity (CONTRACT §2).
    LOAD_STATUSES = ["assigned", "contacted"]
    # Which status may follow which; the owner records progress, managers can also reopen.
    TRANSITIONS = {
        "unassigned": {"pooled", "assigned"},
        "pooled": {"assigned", "unassigned"},
        "assigned": {"contacted", "qualified", "won", "lost", "pooled", "unassigned"},
        "contacted": {"qualified", "won", "lost"},
        "qualified": {"won", "lost", "contacted"},
        "won": set(),
        "lost": {"contacted"},
    }

    # email/source: plain btree indexes in Meta (db_index=True on a CharField adds a second,
    # varchar_pattern_ops "_like" index for LIKE 'x%' that no query here uses; each is paid on every insert).
    email = models.EmailField(blank=True, help_text="Stored lower-case.")
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    company = models.CharField(max_length=200, blank=True)
    title = models.CharField(max_length=200, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 alpha-2")
    region = models.CharField(max_length=100, blank=True)
    postcode = models.CharField(max_length=20, blank=True)
    industry = models.CharField(max_length=100, blank=True)
    company_size = models.PositiveIntegerField(null=True, blank=True)
    product = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=100, blank=True)
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    # No index of its own: lead_report_cover leads with received_at and serves its ranges and ordering.
    received_at = models.DateTimeField(default=timezone.now, db_index=False)
    extra = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UNASSIGNED)
    # owner, pool, rule, import_job: no plain FK index. The indexes that lead with them (Meta) are partial,
    # WHERE the column IS NOT NULL: a new lead has none of them, so a CSV import of 100,000 leads writes
    # no entry into any of them (all-NULL keys were a third of the import's index work), and every query
    # that uses them names a value (owner = X implies owner IS NOT NULL, which PostgreSQL proves).
    owner = models.ForeignKey(
        "reps.Rep", null=True, blank=True, on_delete=models.SET_NULL, related_name="leads", db_index=False
    )
    pool = models.ForeignKey(
        "routing.Pool", null=True, blank=True, on_delete=models.SET_NULL, related_name="leads", db_index=False
    )
    # rule and import_job say where the lead came from (ProvenanceKey: not database constraints); owner
    # and pool are the lead's live state and stay constraints.
    rule = ProvenanceKey(
        "routing.Rule", null=True, blank=True, on_delete=models.SET_NULL, related_name="leads", db_index=False
    )

    # The raw material of speed-to-lead: each stage's first moment.
    routed_at = models.DateTimeField(null=True, blank=True)
    pooled_at = models.DateTimeField(null=True, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    first_touch_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    # The clock: deadlines the sweeper looks for, and how far up the ladder it went.
    sla_due_at = models.DateTimeField(null=True, blank=True)
    escalation_step = models.PositiveSmallIntegerField(default=0)
    reassign_count = models.PositiveSmallIntegerField(default=0)
    pool_due_at = models.DateTimeField(null=True, blank=True)
    pool_stage = models.CharField(max_length=12, blank=True, help_text="Pool timeout stage already taken.")

    merged_count = models.PositiveIntegerField(default=0)
    # Imported with "do not route": route_pending leaves the lead alone until a manager routes or
    # assigns it (the Unassigned queue), instead of routing it a minute later.
    routing_held = models.BooleanField(
        default=False, help_text="Imported without routing: waits for a manager instead of route_pending."
    )
    import_job = ProvenanceKey(
        "routing.ImportJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="leads", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LeadQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            # No index on country or industry: the board matches them ignoring case (iexact, icontains),
            # which a plain btree cannot serve, reports group by them over a date range (the report
            # cover's scan), and the admin reads their filter values at most every five minutes
            # (CachedValuesFilter; a chosen value is then found by a scan, 90 ms at a million leads
            # against 8 ms with an index). Both were paid on every imported row: dropping them took a
            # tenth off the schema floor (PostgreSQL alone storing 100k imported leads and events:
            # 1.90 → 1.72 s).
            models.Index(fields=["email"], name="lead_email"),
            # The admin's and the reports' source filter (exact): a rare source is found without a scan.
            models.Index(fields=["source"], name="lead_source"),
            models.Index(fields=["status", "received_at"], name="lead_status_received"),
            models.Index(fields=["owner", "status"], name="lead_owner_status", condition=models.Q(owner__isnull=False)),
            models.Index(fields=["pool", "status"], name="lead_pool_status", condition=models.Q(pool__isnull=False)),
            models.Index(fields=["owner", "assigned_at"], name="lead_owner_assigned",
                         condition=models.Q(owner__isnull=False)),
            models.Index(fields=["rule"], name="lead_rule", condition=models.Q(rule__isnull=False)),
            models.Index(fields=["import_job"], name="lead_import_job", condition=models.Q(import_job__isnull=False)),
            # Partial indexes keep the sweeps' scans to the handful of leads that can be due.
            models.Index(
                fields=["sla_due_at"],
                name="lead_sla_due_open",
                condition=models.Q(first_touch_at__isnull=True, status="assigned"),
            ),
            models.Index(
                fields=["pool_due_at"],
                name="lead_pool_due_waiting",
                condition=models.Q(status="pooled"),
            ),
            # Reports (owner: reports): every speed/SLA/conversion-state figure over a date range reads only
            # these columns, so PostgreSQL answers from the index alone (index-only scan) instead of visiting
            # a million heap rows — the dashboard over 90 days of 1M leads went from ~1.4 s to ~0.75 s.
            models.Index(
                fields=["received_at", "first_touch_at", "sla_due_at", "escalation_step", "assigned_at", "status",
                        "source"],
                name="lead_report_cover",
            ),
        ]
        permissions = [
            ("reassign_lead", "Can reassign leads to another rep"),
            ("import_leads", "Can import leads"),
            ("view_reports", "Can view reports"),
        ]

    def __str__(self) -> str:
        who = self.full_name or self.email or self.phone or f"lead {self.pk}"
        return f"{who} ({self.company})" if self.company else who

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    def can_become(self, status: str) -> bool:
        return status in self.TRANSITIONS.get(self.status, set())


class LeadEvent(models.Model):
    class Kind(models.TextChoices):
        RECEIVED = "received", "Received"
        MERGED = "merged", "Merged duplicate"
        ROUTED = "routed", "Routed"
        UNASSIGNED = "unassigned", "Left unassigned"
        POOLED = "pooled", "Sent to pool"
        ANNOUNCED = "announced", "Announced"
        CLAIMED = "claimed", "Claimed"
        CLAIM_REFUSED = "claim_refused", "Claim refused"
        RELEASED = "released", "Released"
        STATUS_CHANGED = "status_changed", "Status changed"
        SLA_BREACHED = "sla_breached", "SLA breached"
        ESCALATED = "escalated", "Escalated"
        REASSIGNED = "reassigned", "Reassigned"
        NOTIFIED = "notified", "Notified"
        MANUAL_ASSIGNED = "manual_assigned", "Manually assigned"

    # Foreign keys without an index of their own (every CSV-imported lead writes an event, and each index
    # is paid on each insert): lead and rep lead event_lead_at / event_rep_kind_at; no query filters by
    # actor or rule; the pool filters (claims/releases per pool) also narrow by kind and a recent `at`,
    # which event_kind_at serves. Deleting a user, rule or pool then scans events to null them — rare
    # admin actions, not hot paths.
    # actor, rep, rule and pool say who and what, at the time (ProvenanceKey: not database constraints).
    # The lead is what the log is about: no event without its lead.
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    actor = ProvenanceKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    rep = ProvenanceKey("reps.Rep", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                        db_index=False)
    rule = ProvenanceKey("routing.Rule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                         db_index=False)
    pool = ProvenanceKey("routing.Pool", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                         db_index=False)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["lead", "at"], name="event_lead_at"),
            models.Index(fields=["kind", "at"], name="event_kind_at"),
            # Partial: most events (every received, merged and routed-to-pool one) name no rep.
            models.Index(fields=["rep", "kind", "at"], name="event_rep_kind_at", condition=models.Q(rep__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M}"
