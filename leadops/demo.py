"""Demo data: a believable sales org with two months of lead history.

Three teams, fifteen people of every level, two pools, a published rule set, and ~2,000 leads
with outcomes at realistic delays, so that the board, the admin and the reports have something
true-looking to show. Everything is seeded from a fixed random seed, so two runs look alike.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import Counter
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

DEMO_PASSWORD = "leadops-demo"  # noqa: S105 - printed to the user on purpose; demo only
LOGINS = [
    ("maria", "Sales manager (admin, reports, rules, unassigned queue)"),
    ("alice", "Senior rep, EMEA (board, pools)"),
    ("ben", "Junior rep, EMEA (board, pools)"),
    ("oscar", "Ops staff (CSV intake)"),
]

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def _hours(start: str = "09:00", end: str = "17:30") -> dict[str, list[str]]:
    return {d: [start, end] for d in WEEKDAYS}


def _rep(username, name, team, level, tz, territories, skills=(), holidays="", capacity=40, daily_cap=25,
         weight=1, hours=True):
    rep = {
        "username": username,
        "email": f"{username}@leadops.example",
        "name": name,
        "team": team,
        "level": level,
        "skills": list(skills),
        "territories": list(territories),
        "capacity": capacity,
        "daily_cap": daily_cap,
        "weight": weight,
        "timezone": tz,
    }
    if hours:
        rep["working_hours"] = _hours()
    if holidays:
        rep["holidays"] = holidays
    return rep


ORG = {
    "teams": [{"name": "EMEA"}, {"name": "Americas"}, {"name": "APAC"}],
    "skills": ["payments", "german", "spanish", "portuguese", "japanese", "enterprise"],
    "territories": [
        {"name": "DACH", "countries": ["DE", "AT", "CH"], "regions": [], "postcodes": []},
        {"name": "UK & Ireland", "countries": ["GB", "IE"], "regions": [], "postcodes": []},
        {"name": "Iberia", "countries": ["ES", "PT"], "regions": [], "postcodes": []},
        {"name": "France & Benelux", "countries": ["FR", "BE", "NL", "LU"], "regions": [], "postcodes": []},
        {"name": "North America", "countries": ["US", "CA"], "regions": [], "postcodes": []},
        {"name": "LATAM", "countries": ["MX", "BR", "AR", "CL", "CO"], "regions": [], "postcodes": []},
        {"name": "SEA", "countries": ["SG", "MY", "ID", "TH", "VN", "PH"], "regions": [], "postcodes": []},
        {"name": "Japan", "countries": ["JP"], "regions": [], "postcodes": []},
        {"name": "ANZ", "countries": ["AU", "NZ"], "regions": [], "postcodes": []},
    ],
    "reps": [
        # Alice covers the follow-the-sun inbound desk: no fixed hours, so the demo routes at any time.
        _rep("alice", "Alice Ahn", "EMEA", "senior", "Europe/Berlin", ["DACH", "France & Benelux"],
             ["payments", "german", "enterprise"], weight=2, hours=False),
        _rep("ben", "Ben Becker", "EMEA", "junior", "Europe/Berlin", ["DACH"], ["german"], holidays="DE-BE"),
        _rep("chloe", "Chloe Clarke", "EMEA", "junior", "Europe/London", ["UK & Ireland"], holidays="GB"),
        _rep("diego", "Diego Díaz", "EMEA", "senior", "Europe/Madrid", ["Iberia", "France & Benelux"],
             ["spanish", "payments"], weight=2, holidays="ES"),
        _rep("dora", "Dora Dietrich", "EMEA", "director", "Europe/Berlin", ["DACH", "UK & Ireland"],
             ["enterprise", "german"], capacity=25, daily_cap=10),
        _rep("maria", "Maria Moreau", "EMEA", "manager", "Europe/Paris", [], ["enterprise"], capacity=10,
             daily_cap=5),
        _rep("ethan", "Ethan Evans", "Americas", "senior", "America/New_York", ["North America"],
             ["enterprise", "payments"], weight=2, holidays="US"),
        _rep("fiona", "Fiona Fox", "Americas", "junior", "America/Chicago", ["North America"], holidays="US"),
        _rep("gabriel", "Gabriel Gomes", "Americas", "junior", "America/Sao_Paulo", ["LATAM"],
             ["spanish", "portuguese"], holidays="BR"),
        _rep("hannah", "Hannah Hill", "Americas", "senior", "America/Los_Angeles", ["North America"],
             ["payments"], weight=2, holidays="US"),
        _rep("victor", "Victor Vega", "Americas", "director", "America/New_York", ["North America", "LATAM"],
             ["enterprise", "spanish"], capacity=25, daily_cap=10),
        _rep("isaac", "Isaac Iyer", "APAC", "senior", "Asia/Singapore", ["SEA"], ["enterprise"], weight=2),
        _rep("jun", "Jun Kimura", "APAC", "junior", "Asia/Tokyo", ["Japan"], ["japanese"], holidays="JP"),
        _rep("kate", "Kate Kelly", "APAC", "junior", "Australia/Sydney", ["ANZ"], holidays="AU"),
        _rep("liam", "Liam Lee", "APAC", "senior", "Australia/Sydney", ["ANZ", "SEA"], ["payments"], weight=2),
    ],
    "pools": [
        {"name": "smb", "mode": "cherry_pick", "members": ["alice", "ben", "chloe", "fiona", "gabriel", "jun", "kate"],
         "claim_limit": 5, "window_minutes": 30, "on_timeout": "shotgun", "managers": ["maria"]},
        {"name": "hot-inbound", "mode": "shotgun",
         "members": ["alice", "diego", "ethan", "hannah", "isaac", "liam"],
         "claim_limit": 3, "window_minutes": 10, "on_timeout": "push", "managers": ["maria"]},
    ],
}

RULES = {
    "name": "Demo routing",
    "rules": [
        {"name": "Urgent to directors",
         "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
         "candidates": {"levels": ["director"]},
         "strategy": "round_robin", "sla_minutes": 5, "escalate_to": ["maria"]},
        {"name": "Enterprise high scorers to seniors",
         "when": [{"field": "score", "op": "gte", "value": 80},
                  {"field": "company_size", "op": "gte", "value": 1000}],
         "candidates": {"levels": ["senior"], "territory": True},
         "strategy": "weighted", "sla_minutes": 15, "escalate_to": ["maria"]},
        {"name": "Demo requests to the hot-inbound pool",
         "when": [{"field": "source", "op": "eq", "value": "demo_request"}],
         "pool": "hot-inbound"},
        {"name": "Small business pool",
         "when": [{"field": "company_size", "op": "lt", "value": 50}],
         "pool": "smb"},
        {"name": "EMEA by territory",
         "when": [{"field": "country", "op": "in",
                   "value": ["DE", "AT", "CH", "GB", "IE", "ES", "PT", "FR", "BE", "NL", "LU"]}],
         "candidates": {"team": "EMEA", "levels": ["junior", "senior"], "territory": True},
         "strategy": "round_robin", "sla_minutes": 60, "escalate_to": ["maria"]},
        {"name": "Americas by capacity",
         "when": [{"field": "country", "op": "in", "value": ["US", "CA", "MX", "BR", "AR", "CL", "CO"]}],
         "candidates": {"team": "Americas", "levels": ["junior", "senior"], "territory": True},
         "strategy": "load_balanced", "sla_minutes": 60, "escalate_to": ["victor"]},
        {"name": "APAC round robin",
         "when": [{"field": "country", "op": "in", "value": ["SG", "MY", "ID", "TH", "VN", "PH", "JP", "AU", "NZ"]}],
         "candidates": {"team": "APAC", "territory": True},
         "strategy": "round_robin", "sla_minutes": 60},
    ],
    "fallback": {"candidates": {"levels": ["junior", "senior"]}, "strategy": "load_balanced"},
}

# Where leads come from, with how they tend to look.
COUNTRIES = [
    ("DE", 14), ("AT", 3), ("CH", 3), ("GB", 10), ("IE", 2), ("ES", 5), ("PT", 2), ("FR", 7), ("NL", 4),
    ("BE", 2), ("US", 22), ("CA", 4), ("MX", 2), ("BR", 4), ("AR", 1), ("SG", 3), ("JP", 4), ("AU", 5),
    ("NZ", 1), ("MY", 1), ("IN", 1),
]
SOURCES = [("web", 38), ("event", 14), ("partner", 10), ("purchased_list", 12), ("demo_request", 12),
           ("referral", 8), ("webinar", 6)]
INDUSTRIES = ["Software", "Retail", "Financial services", "Manufacturing", "Healthcare", "Logistics",
              "Education", "Media", "Hospitality", "Energy"]
PRODUCTS = ["Payments", "Billing", "Analytics", "Platform"]
SIZES = [(8, 10), (25, 14), (45, 8), (120, 18), (350, 16), (800, 12), (2500, 10), (8000, 7), (20000, 5)]
FIRST = ["Anna", "Lukas", "Sofia", "Noah", "Emma", "Liam", "Mia", "Jonas", "Olivia", "Mateo", "Yuki", "Hiro",
         "Chloé", "Lucas", "Isabella", "Ethan", "Aisha", "Ravi", "Mei", "Oliver", "Lea", "Finn", "Zoe", "Omar"]
LAST = ["Müller", "Schmidt", "García", "Smith", "Johnson", "Martin", "Rossi", "Tanaka", "Sato", "Dubois",
        "Silva", "Kowalski", "Nguyen", "Brown", "Wilson", "Fischer", "Lopez", "Kim", "Chen", "Novak"]
COMPANY_A = ["Nord", "Blue", "Bright", "Alpen", "Sun", "Iron", "Cedar", "Pixel", "Harbor", "Quantum", "Atlas",
             "Maple", "Kite", "Orbit", "Zen", "Coral", "Summit", "Vertex"]
COMPANY_B = ["Systems", "Retail", "Logistics", "Labs", "Foods", "Health", "Capital", "Works", "Energy",
             "Media", "Motors", "Studio", "Analytics", "Partners"]


def _pick(rng: random.Random, weighted: list[tuple]) -> object:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights=weights)[0]


def demo_loaded() -> bool:
    from routing.models import Lead

    return User.objects.filter(username="maria").exists() and Lead.objects.exists()


def demo_reset() -> None:
    from reps.models import Rep, Skill, Team, Territory
    from routing.models import ImportJob, Lead, Notification, Pool, RuleCursor, RuleSet

    with transaction.atomic():
        Notification.objects.all().delete()
        Lead.objects.all().delete()
        ImportJob.objects.all().delete()
        RuleCursor.objects.all().delete()
        RuleSet.objects.all().delete()
        Pool.objects.all().delete()
        usernames = [r["username"] for r in ORG["reps"]] + ["oscar"]
        Rep.objects.filter(user__username__in=usernames).delete()
        User.objects.filter(username__in=usernames).delete()
        Team.objects.filter(name__in=[t["name"] for t in ORG["teams"]]).delete()
        Territory.objects.filter(name__in=[t["name"] for t in ORG["territories"]]).delete()
        Skill.objects.filter(name__in=ORG["skills"]).delete()


def demo_seed(*, leads: int = 2000, days: int = 60, seed: int = 7, now: dt.datetime | None = None) -> dict:
    """Build the demo company. Returns counts. Call only on an empty (or reset) demo."""
    from leadops import roles
    from reps.orgfile import validate_org
    from reps.services import known_names, org_load
    from routing.services import ruleset_create_draft, ruleset_publish

    now = now or timezone.now()
    rng = random.Random(seed)
    roles.ensure_groups()
    with transaction.atomic():
        org, errors = validate_org(ORG, known_names())
        if errors:
            raise ValueError("demo org is invalid: " + "; ".join(errors))
        org_load(org)
        _demo_users()
        draft = ruleset_create_draft(RULES, actor=User.objects.get(username="maria"))
        ruleset_publish(draft, actor=User.objects.get(username="maria"))
        history = _demo_history(rng, leads=leads, days=days, now=now)
    live = _demo_live_leads(rng, now=now)
    return {"history": history, **live}


def _demo_users() -> None:
    """Passwords for the demo logins; maria also runs the admin; oscar is ops staff."""
    from django.contrib.auth.models import Group

    from leadops import roles

    for username, _ in LOGINS:
        user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@leadops.example"})
        user.set_password(DEMO_PASSWORD)
        if username == "maria":
            user.is_staff = True
            user.groups.add(Group.objects.get(name=roles.MANAGERS))
        if username == "oscar":
            user.first_name, user.last_name = "Oscar", "Owens"
            user.groups.add(Group.objects.get(name=roles.OPS))
        user.save()


def _fake_lead(rng: random.Random, received_at: dt.datetime, n: int) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    company = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)}"
    size = max(1, int(_pick(rng, SIZES) * rng.uniform(0.6, 1.5)))
    score = max(0, min(100, int(rng.gauss(55 + 8 * math.log10(size), 18))))
    return {
        "email": _ascii(f"{first}.{last}.{n}@{company.replace(' ', '')}.example".lower()),
        "first_name": first,
        "last_name": last,
        "phone": f"+4930{rng.randint(1000000, 9999999)}",
        "company": company,
        "title": rng.choice(["CFO", "Head of Finance", "CTO", "Operations Manager", "Founder", "Buyer", "VP Sales"]),
        "country": _pick(rng, COUNTRIES),
        "industry": rng.choice(INDUSTRIES),
        "company_size": size,
        "product": rng.choice(PRODUCTS),
        "source": _pick(rng, SOURCES),
        "score": score,
        "priority": "urgent" if rng.random() < 0.03 else "normal",
        "value": Decimal(int(size ** 0.6 * rng.uniform(80, 160))),
        "received_at": received_at,
    }


def _ascii(text: str) -> str:
    return text.encode("ascii", "ignore").decode()


def _arrival(rng: random.Random, now: dt.datetime, days: int) -> dt.datetime:
    # Weekdays and office hours get most leads; nights and weekends a trickle.
    while True:
        t = now - dt.timedelta(seconds=rng.uniform(3600, days * 86400))
        busy = (t.weekday() < 5) * 0.8 + 0.2
        office = 1.0 if 7 <= t.hour <= 19 else 0.35
        if rng.random() < busy * office:
            return t


def _demo_history(rng: random.Random, *, leads: int, days: int, now: dt.datetime) -> int:
    """Two months of leads that already went through routing, with outcomes at realistic delays."""
    from reps.models import Rep
    from routing.models import Lead, LeadEvent, Pool, Rule, RuleSet
    from routing.pools import HELD_STATUSES as HELD

    rule_set = RuleSet.objects.get(status="published")
    rules = {r.name: r for r in Rule.objects.filter(rule_set=rule_set)}
    pools = {p.name: p for p in Pool.objects.all()}
    reps = list(Rep.objects.select_related("user", "team").prefetch_related("territories"))
    by_team: dict[str, list[Rep]] = {}
    for rep in reps:
        if rep.level in ("junior", "senior") and rep.team:
            by_team.setdefault(rep.team.name, []).append(rep)
    directors = [r for r in reps if r.level == "director"]
    seniors = [r for r in reps if r.level == "senior"]
    team_of_country = {}
    for rep in reps:
        for territory in rep.territories.all():
            for c in territory.countries:
                team_of_country.setdefault(c, rep.team.name)
    # Reps differ: some answer fast and close well, others not — the reports should show it.
    speed = {r.pk: rng.uniform(0.5, 3.0) for r in reps}
    skill = {r.pk: rng.uniform(0.6, 1.4) for r in reps}

    lead_rows, plans = [], []
    for n in range(leads):
        data = _fake_lead(rng, _arrival(rng, now, days), n)
        rule, owner, pool = _demo_choose(rng, data, rules, pools, by_team, directors, seniors, team_of_country)
        lead_rows.append(Lead(**data, rule=rule, pool=pool))
        plans.append((owner, pool))
    Lead.objects.bulk_create(lead_rows, batch_size=500)
    created = list(Lead.objects.filter(email__in=[r.email for r in lead_rows]).order_by("id"))
    by_email = {lead.email: lead for lead in created}

    events, updates = [], []
    pool_members = {name: list(p.members.all()) for name, p in pools.items()}
    held: Counter[tuple[int, int]] = Counter()
    demo_logins = {r.pk for r in reps if r.user.username in dict(LOGINS)}
    for row, (owner, pool) in zip(lead_rows, plans, strict=True):
        lead = by_email[row.email]
        t = lead.received_at
        events.append(LeadEvent(lead=lead, kind="received", at=t, detail={"source": lead.source}))
        routed = t + dt.timedelta(seconds=rng.uniform(0.2, 2.5))
        lead.routed_at = routed
        if pool is not None:
            lead.pooled_at = routed
            events.append(LeadEvent(lead=lead, kind="pooled", at=routed, pool=pool, rule=lead.rule,
                                    detail={"mode": pool.mode, "rule": lead.rule.name}))
            # Only members under the claim limit can claim: the demo must never show "9 of 5". The reps
            # one can log in as stop two short of it, so their first claim on the board is not refused.
            free = [m for m in pool_members[pool.name]
                    if held[pool.pk, m.pk] < (pool.claim_limit or math.inf) - (2 if m.pk in demo_logins else 0)]
            if not free:
                # Everyone is at the limit: as in real life, the lead waits in the pool.
                lead.status = "pooled"
                updates.append(lead)
                continue
            owner = rng.choice(free)
            claimed = routed + dt.timedelta(minutes=rng.lognormvariate(2.0, 1.0))
            lead.claimed_at = lead.assigned_at = claimed
            events.append(LeadEvent(lead=lead, kind="claimed", at=claimed, rep=owner, pool=pool))
        else:
            lead.assigned_at = routed
            events.append(LeadEvent(lead=lead, kind="routed", at=routed, rep=owner, rule=lead.rule,
                                    detail={"rule": lead.rule.name if lead.rule else "fallback",
                                            "chosen": owner.user.username}))
        lead.owner = owner
        lead.status = "assigned"
        lead.notified_at = lead.assigned_at + dt.timedelta(seconds=rng.uniform(0.5, 4))
        sla = lead.rule.sla_minutes if lead.rule and lead.rule.sla_minutes else 60
        lead.sla_due_at = lead.assigned_at + dt.timedelta(minutes=sla)
        _demo_outcome(rng, lead, events, now, speed[owner.pk], skill[owner.pk])
        if pool is not None and lead.status in HELD:
            held[pool.pk, owner.pk] += 1
        updates.append(lead)
    Lead.objects.bulk_update(
        updates,
        ["owner", "status", "routed_at", "pooled_at", "claimed_at", "assigned_at", "notified_at", "first_touch_at",
         "closed_at", "sla_due_at", "escalation_step"],
        batch_size=500,
    )
    LeadEvent.objects.bulk_create(events, batch_size=1000)
    return len(updates)


def _demo_choose(rng, data, rules, pools, by_team, directors, seniors, team_of_country):
    if data["priority"] == "urgent":
        return rules["Urgent to directors"], rng.choice(directors), None
    if data["score"] >= 80 and data["company_size"] >= 1000:
        weighted = [(r, r.weight) for r in seniors]
        return rules["Enterprise high scorers to seniors"], _pick(rng, weighted), None
    if data["source"] == "demo_request":
        return rules["Demo requests to the hot-inbound pool"], None, pools["hot-inbound"]
    if data["company_size"] < 50:
        return rules["Small business pool"], None, pools["smb"]
    team = team_of_country.get(data["country"])
    name = {"EMEA": "EMEA by territory", "Americas": "Americas by capacity", "APAC": "APAC round robin"}.get(team)
    if name is None:
        everyone = [r for members in by_team.values() for r in members]
        return None, rng.choice(everyone), None
    candidates = [r for r in by_team.get(team, []) if any(data["country"] in t.countries for t in r.territories.all())]
    return rules[name], rng.choice(candidates or by_team[team]), None


def _demo_outcome(rng, lead, events, now, speed, skill) -> None:
    """Walk a lead through contacted → qualified → won, or lost, as far as `now` allows."""
    from routing.models import LeadEvent

    def change(at, old, new):
        events.append(LeadEvent(lead=lead, kind="status_changed", at=at, rep=lead.owner,
                                detail={"from": old, "to": new}))

    start = lead.assigned_at
    age = (now - start).total_seconds() / 60
    # Minutes to first touch: most within the hour, a long tail of slow answers.
    touch = rng.lognormvariate(math.log(12 * speed), 1.3)
    if rng.random() < 0.08 or touch > age:
        if lead.sla_due_at < now:
            events.append(LeadEvent(lead=lead, kind="sla_breached", at=lead.sla_due_at, rep=lead.owner,
                                    rule=lead.rule, detail={"due": lead.sla_due_at.isoformat()}))
            events.append(LeadEvent(lead=lead, kind="escalated", at=lead.sla_due_at, rep=lead.owner,
                                    rule=lead.rule, detail={"step": 1, "action": "remind"}))
            lead.escalation_step = 1
        if age > 3 * 24 * 60:  # nobody ever reached them: written off
            lead.status, lead.closed_at = "lost", start + dt.timedelta(days=3)
            change(lead.closed_at, "assigned", "lost")
        return
    t = start + dt.timedelta(minutes=touch)
    lead.first_touch_at = t
    if t > lead.sla_due_at:
        events.append(LeadEvent(lead=lead, kind="sla_breached", at=lead.sla_due_at, rep=lead.owner,
                                rule=lead.rule, detail={"due": lead.sla_due_at.isoformat()}))
    status = "contacted"
    change(t, "assigned", "contacted")
    quality = (lead.score or 50) / 100 * skill
    steps = [("qualified", 0.55 * quality + 0.1, 3 * 24 * 60), ("won", 0.45 * quality + 0.05, 10 * 24 * 60)]
    for next_status, p, delay in steps:
        t2 = t + dt.timedelta(minutes=rng.uniform(0.3, 1.0) * delay)
        if t2 > now:
            break
        if rng.random() > p:
            change(t2, status, "lost")
            status, lead.closed_at = "lost", t2
            break
        change(t2, status, next_status)
        status, t = next_status, t2
        if status == "won":
            lead.closed_at = t2
    lead.status = status


def _demo_live_leads(rng: random.Random, *, now: dt.datetime) -> dict:
    """Fresh leads routed by the real engine right now: waiting in pools, on boards with SLA countdowns."""
    from routing.models import Lead, LeadEvent
    from routing.services import route_leads

    fresh = []
    for n in range(40):
        data = _fake_lead(rng, now - dt.timedelta(minutes=rng.uniform(0, 25)), 100000 + n)
        if n < 12:
            data["company_size"] = rng.randint(5, 45)  # the smb pool
            data["source"] = "web"
            data["priority"] = "normal"
        elif n < 16:
            data["source"] = "demo_request"
            data["priority"] = "normal"
            data["company_size"] = rng.randint(60, 900)
        fresh.append(data)
    with transaction.atomic():
        created = [Lead.objects.create(**data) for data in fresh]
        LeadEvent.objects.bulk_create(
            [LeadEvent(lead=lead, kind="received", at=lead.received_at, detail={"source": lead.source})
             for lead in created]
        )
    counts = route_leads([lead.pk for lead in created], now=now)
    return {"live": len(created), **counts}
