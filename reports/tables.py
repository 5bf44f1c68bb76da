"""Every report table, described once: the page renders it and the CSV export writes it.

A table is a title, columns (key, label, kind) and rows (dicts). `kind` decides both the
on-screen format (template filter `cell`) and the CSV form (machine-readable numbers, ISO dates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reports import selectors
from reports.selectors import Scope


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "text"  # text | int | num | money | pct | pct_delta | rate_ci | dur | dt | date | hours | gini


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    by: str = ""
    by_choices: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""

    def csv_header(self) -> list[str]:
        out = []
        for col in self.columns:
            out.append(col.key)
            if col.kind == "rate_ci":
                out += [f"{col.key}_ci_low", f"{col.key}_ci_high"]
        return out


def _choices(keys: list[str], scope: Scope) -> list[tuple[str, str]]:
    labels = selectors.groupings(scope.tz)
    return [(k, labels[k].label) for k in keys]


def _pick(by: str, allowed: list[str]) -> str:
    return by if by in allowed else allowed[0]


def speed_table(scope: Scope, by: str = "") -> Table:
    by = _pick(by, selectors.SPEED_GROUPS)
    label = selectors.groupings(scope.tz)[by].label
    return Table(
        name="speed",
        title=f"Speed-to-lead by {label.lower()}",
        by=by,
        by_choices=_choices(selectors.SPEED_GROUPS, scope),
        columns=[
            Column("label", label),
            Column("leads", "Leads", "int"),
            Column("touched", "Touched", "int"),
            Column("stl_p50", "Median to first touch", "dur"),
            Column("stl_p90", "P90 to first touch", "dur"),
            Column("share_5m", "≤ 5 min", "pct"),
            Column("share_1h", "≤ 1 h", "pct"),
            Column("share_24h", "≤ 24 h", "pct"),
            Column("route_p50", "Median to routed", "dur"),
            Column("route_p90", "P90 to routed", "dur"),
            Column("notify_p50", "Median routed → notified", "dur"),
            Column("notify_p90", "P90 routed → notified", "dur"),
            Column("claim_p50", "Median pooled → claimed", "dur"),
            Column("claim_p90", "P90 pooled → claimed", "dur"),
        ],
        rows=selectors.speed_by(scope, by),
        note="Shares count only leads whose outcome is known: answered, or older than the threshold.",
    )


def sla_table(scope: Scope, by: str = "") -> Table:
    by = _pick(by, selectors.SLA_GROUPS)
    label = selectors.groupings(scope.tz)[by].label
    return Table(
        name="sla",
        title=f"SLA by {label.lower()}",
        by=by,
        by_choices=_choices(selectors.SLA_GROUPS, scope),
        columns=[
            Column("label", label),
            Column("with_sla", "Leads with SLA", "int"),
            Column("hit", "Hit", "int"),
            Column("missed", "Missed", "int"),
            Column("hit_rate", "Hit rate", "pct"),
            Column("breaches", "Breaches", "int"),
            Column("escalations", "Escalations", "int"),
        ],
        rows=selectors.sla_by(scope, by),
        note="Breaches and escalations count against the rep who held the lead when they happened.",
    )


def overdue_table(scope: Scope, by: str = "") -> Table:
    return Table(
        name="overdue",
        title="Overdue now",
        columns=[
            Column("lead_id", "Lead #", "int"),
            Column("label", "Lead"),
            Column("status", "Status"),
            Column("owner", "Owner"),
            Column("team", "Team"),
            Column("rule", "Rule"),
            Column("pool", "Pool"),
            Column("received_at", "Received", "dt"),
            Column("sla_due_at", "Due", "dt"),
            Column("overdue_seconds", "Overdue by", "dur"),
            Column("escalation_step", "Ladder step", "int"),
        ],
        rows=selectors.overdue_leads(scope),
        note="Open leads past their first-touch deadline right now, whatever the date range.",
    )


def conversion_table(scope: Scope, by: str = "") -> Table:
    by = _pick(by, selectors.CONVERSION_GROUPS)
    label = selectors.groupings(scope.tz)[by].label
    return Table(
        name="conversion",
        title=f"Conversion by {label.lower()}",
        by=by,
        by_choices=_choices(selectors.CONVERSION_GROUPS, scope),
        columns=[
            Column("label", label),
            Column("assigned", "Assigned", "int"),
            Column("qualified", "Qualified", "int"),
            Column("won", "Won", "int"),
            Column("lost", "Lost", "int"),
            Column("qualified_rate", "Qualified ÷ assigned", "rate_ci"),
            Column("won_rate", "Won ÷ assigned", "rate_ci"),
        ],
        rows=selectors.conversion_by(scope, by),
        note="Brackets: 95% Wilson interval — wide brackets mean too few leads to judge.",
    )


def fairness_table(scope: Scope, by: str = "") -> Table:
    return Table(
        name="fairness",
        title="Fairness and workload by rep",
        columns=[
            Column("label", "Rep"),
            Column("team", "Team"),
            Column("weight", "Weight", "int"),
            Column("available_hours", "Available h", "hours"),
            Column("received", "Received", "int"),
            Column("share", "Share", "pct"),
            Column("expected_share", "Expected share", "pct"),
            Column("share_gap", "Gap", "pct_delta"),
            Column("value", "Value received", "money"),
            Column("score", "Score received", "int"),
            Column("value_per_hour", "Value / available h", "money"),
            Column("open_load", "Open now", "int"),
            Column("capacity", "Capacity", "int"),
            Column("load_ratio", "Load", "pct"),
            Column("claims", "Claimed", "int"),
            Column("pushes", "Pushed", "int"),
        ],
        rows=selectors.fairness(scope),
        note="Expected share = weight × available working hours in the period, as a share of the team's.",
    )


def fairness_index_table(scope: Scope, by: str = "") -> Table:
    return Table(
        name="fairness_index",
        title="Fairness index by week",
        columns=[
            Column("start", "Week from", "date"),
            Column("reps", "Reps available", "int"),
            Column("gini", "Gini of value per available hour", "gini"),
        ],
        rows=selectors.fairness_index(scope),
        note="0 = every available hour earned the same lead value; 1 = one rep got everything.",
    )


def hoarding_table(scope: Scope, by: str = "") -> Table:
    return Table(
        name="hoarding",
        title="Pool watch list: hoarding and early signs",
        columns=[
            Column("label", "Rep"),
            Column("pool", "Pool"),
            Column("open", "Open claimed", "int"),
            Column("untouched", "Untouched", "int"),
            Column("hoarded", "Hoarded", "int"),
            Column("reason", "Why listed"),
        ],
        rows=selectors.hoarding_flags(scope),
        note="Hoarded: claimed, and not touched within the SLA — the count the pool pages show. "
             "The other reasons are early signs, not hoarding yet.",
    )


def sources_table(scope: Scope, by: str = "", rows: list[dict[str, Any]] | None = None) -> Table:
    """`rows` lets the dashboard reuse the figures it already counted."""
    return Table(
        name="sources",
        title="By source",
        columns=[
            Column("label", "Source"),
            Column("leads", "Leads", "int"),
            Column("share_5m", "Answered ≤ 5 min", "pct"),
            Column("share_1h", "≤ 1 h", "pct"),
            Column("hit_rate", "SLA hit rate", "pct"),
            Column("assigned", "Assigned", "int"),
            Column("won_rate", "Won ÷ assigned", "rate_ci"),
        ],
        rows=selectors.dashboard_sources(scope) if rows is None else rows,
    )


TABLES: dict[str, Callable[..., Table]] = {
    "sources": sources_table,
    "speed": speed_table,
    "sla": sla_table,
    "overdue": overdue_table,
    "conversion": conversion_table,
    "fairness": fairness_table,
    "fairness_index": fairness_index_table,
    "hoarding": hoarding_table,
}
