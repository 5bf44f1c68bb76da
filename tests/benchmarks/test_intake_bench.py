"""Intake benchmarks (`make bench`; marker `bench`). Each prints one JSON line
{"name", "value", "unit", "baseline", "ratio"} with a baseline measured in the same run.

- import_100k: rows/s of `import_leads --no-route` over a generated CSV of BENCH_SCALE rows
  (default 100,000; 5% duplicates, 1% bad rows), against
  * import_100k_vs_copy: raw PostgreSQL COPY of the same file into a bare text table (the ceiling),
  * import_100k_vs_schema_floor: the rows the import stored (its leads and their `received` events)
    copied again by PostgreSQL alone into tables with the same indexes, checks and foreign keys — no
    parsing, no Python: the fastest any import of this file into this schema could write here,
  * import_100k_vs_django: a plain Django loop (csv.DictReader + full_clean + bulk_create of 1,000),
  * import_100k_vs_one_process: the same import with the file parsed in a thread of this process
    instead of a forked worker (what the worker gains),
  * import_100k_peak_rss / _pss: peak memory of this process and its forked parsing worker while
    importing the full file (summed RSS, which counts their shared pages twice; summed PSS, which
    does not), against the same while importing a tenth of it (a ratio near 1 means memory stays
    flat as files grow). With BENCH_SCALE=1000000 this is the issue's 1M-row memory figure.
- import_100k_routed: rows/s of `import_leads` with routing on (a published five-rule set over 40
  reps: round robin, weighted, load balanced, first available), against the same file imported
  with --no-route in the same run (the ratio is what routing costs). Notification delivery is the
  worker's job: the import only queues it.
  * import_100k_routed_vs_schema_floor: what the routed import stored (leads with their owners, their
    `received` and `routed` events) copied again by PostgreSQL alone, as for import_100k.
- api_post_lead_p50 / _p99: one POST /api/leads/ through the whole stack, sequentially, against
  creating the same lead and its event straight through the ORM; api_post_lead_8way_p50 / _p99:
  8 concurrent clients in threads of this process, against the sequential figures;
  api_post_lead_8procs_p50 / _p99 (PostgreSQL): 8 concurrent clients in 8 forked processes, as a web
  server's workers serve them, against the sequential figures.
- api_post_lead_during_import_p50 / _p99 (PostgreSQL): routed POSTs, one after another, while a routed
  import of the file runs in another process; baseline the same POSTs before it.
- api_post_lead_routed_p50 / _p99: the sequential POSTs again with a published rule set (5 rules, 40
  reps), each lead routed and explained in the response; baseline the same POSTs with no rules.
  api_post_lead_routed_8procs_p50 / _p99 (PostgreSQL): routed POSTs from 8 forked processes at once,
  which take turns on the rule cursors; baseline the sequential routed POSTs.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone

from reps.models import Rep, Team
from routing.models import ApiToken, Lead, LeadEvent
from routing.services import record_event, ruleset_create_draft, ruleset_publish
from tests.benchmarks.forked import run_forked
from tests.factories import UserFactory

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]

HEADER = ["email", "first_name", "last_name", "phone", "company", "title", "country", "region", "postcode",
          "industry", "company_size", "product", "source", "score", "priority", "value", "received_at"]
COUNTRIES = [("DE", "+49 30 {:07d}"), ("FR", "+33 1 {:08d}"), ("GB", "+44 20 {:08d}"), ("US", "+1 415 {:07d}"),
             ("ES", "+34 91 {:07d}"), ("Germany", "030 {:07d}"), ("Österreich", "+43 1 {:07d}")]
SIZES = ["1-10", "11-50", "51-200", "201-500", "1000", "5000+", "250"]


def scale() -> int:
    return int(os.environ.get("BENCH_SCALE", "100000"))


def emit(name: str, value: float, unit: str, baseline: float, ratio: float) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "baseline": round(baseline, 3),
                      "ratio": round(ratio, 3)}))


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Written row by row: the generator itself must not hold the file in memory."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(rows):
            roll = rng.random()
            email = f"lead{i}@company{i % 997}.example"
            if roll < 0.05 and i > 10:
                j = rng.randrange(i)
                email = f"Lead{j}@company{j % 997}.example"  # a repeat of an earlier row, other case
            country, phone = COUNTRIES[i % len(COUNTRIES)]
            score = str(rng.randrange(101))
            if 0.05 <= roll < 0.06:
                if rng.random() < 0.5:
                    email = f"broken{i}.example"
                else:
                    score = "high"
            writer.writerow([
                email, "Anna", f"Muster{i}", phone.format(i % 10_000_000), f"Company {i % 997} GmbH", "Buyer",
                country, "", f"{10000 + i % 89999}", "software", SIZES[i % len(SIZES)], "payments", "",
                score, "urgent" if i % 50 == 0 else "normal", f"{i % 5000}.50", "2026-11-01T09:00:00Z",
            ])


def clear_leads() -> None:
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("TRUNCATE routing_leadevent, routing_lead RESTART IDENTITY CASCADE")
        else:
            cur.execute("DELETE FROM routing_leadevent")
            cur.execute("DELETE FROM routing_lead")


def run_import(path: Path, *, route: bool = False) -> tuple[float, dict]:
    out = io.StringIO()
    start = time.perf_counter()
    call_command("import_leads", str(path), *(() if route else ("--no-route",)), "--json", stdout=out)
    return time.perf_counter() - start, json.loads(out.getvalue())


def raw_copy(path: Path) -> float:
    cols = ", ".join(f"{name} text" for name in HEADER)
    start = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE bench_raw ({cols})")
        with path.open("rb") as fh, cur.cursor.copy("COPY bench_raw FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
            while block := fh.read(1 << 16):
                cp.write(block)
        cur.execute("DROP TABLE bench_raw")
    return time.perf_counter() - start


def schema_floor() -> float:
    """Seconds PostgreSQL alone takes to store again what the import stored: every lead and event
    row, COPYed in one transaction into twins of the two tables with the same indexes, CHECKs and
    foreign keys (the event's pointing at the twin lead table), committed."""
    tables = {Lead._meta.db_table: "bench_lead", LeadEvent._meta.db_table: "bench_event"}
    data: dict[str, bytes] = {}
    with connection.cursor() as cur:
        for table in tables:
            with cur.cursor.copy(f"COPY {table} TO STDOUT") as cp:
                data[table] = b"".join(bytes(block) for block in cp)
    try:
        with connection.cursor() as cur:
            for table, twin in tables.items():
                cur.execute(f"CREATE TABLE {twin} (LIKE {table} INCLUDING ALL)")
            cur.execute(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE contype = 'f' AND conrelid::regclass::text = ANY(%s)", [list(tables)]
            )
            for table, definition in cur.fetchall():
                for name, twin in tables.items():
                    definition = definition.replace(f"REFERENCES {name}(", f"REFERENCES {twin}(")
                cur.execute(f"ALTER TABLE {tables[table]} ADD {definition}")
        start = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cur:
            for table, twin in tables.items():
                with cur.cursor.copy(f"COPY {twin} FROM STDIN") as cp:
                    cp.write(data[table])
        return time.perf_counter() - start
    finally:  # a failed run must not leave twins behind for the next one to trip over
        with connection.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_event, bench_lead")


def django_loop(path: Path) -> float:
    """What a reasonable developer writes first: validate each row with the model, insert in batches."""
    start = time.perf_counter()
    batch: list[Lead] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            values = {k: (v or None) if k in ("company_size", "score", "value") else v for k, v in row.items()}
            try:
                values["company_size"] = int(values["company_size"]) if values["company_size"] else None
            except ValueError:
                values["company_size"] = None
            values["value"] = Decimal(values["value"]) if values["value"] else None
            values["received_at"] = values["received_at"] or timezone.now()
            lead = Lead(**values, extra={})
            try:
                lead.full_clean()
            except (ValidationError, ValueError):
                continue
            batch.append(lead)
            if len(batch) >= 1000:
                Lead.objects.bulk_create(batch)
                batch = []
    if batch:
        Lead.objects.bulk_create(batch)
    return time.perf_counter() - start


# Samples a process and its children every 50 ms until its stdin closes, then prints the peaks of
# their summed RSS and summed PSS (kB). A separate process, not a thread: a thread of ours would keep
# the import from forking its parsing worker (leadops.forking.can_fork).
_MEMORY_MONITOR = r"""
import os, select, sys

def read(pid, path, key):
    try:
        with open(f"/proc/{pid}/{path}") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(key)), 0)
    except OSError:
        return 0

def family(pid):
    kids = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids.update(int(k) for k in fh.read().split())
    except OSError:
        pass
    return [pid, *(kid for kid in kids if kid != os.getpid())]  # not this monitor itself

pid, rss, pss = int(sys.argv[1]), 0, 0
while not select.select([sys.stdin], [], [], 0.05)[0]:
    pids = family(pid)
    rss = max(rss, sum(read(p, "status", "VmRSS:") for p in pids))
    pss = max(pss, sum(read(p, "smaps_rollup", "Pss:") for p in pids))
print(rss, pss)
"""


class PeakMemory:
    """Peak memory of this process and its children (the import's parsing worker) while the block
    runs: summed RSS (which counts pages they share twice) and summed PSS (shared pages split
    between the processes sharing them: what they really take together). Linux /proc only."""

    def __enter__(self) -> PeakMemory:
        self.monitor = subprocess.Popen([sys.executable, "-c", _MEMORY_MONITOR, str(os.getpid())],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        time.sleep(0.1)  # let it take its first sample
        return self

    def __exit__(self, *exc) -> None:
        out, _ = self.monitor.communicate("")  # closing its stdin stops it
        rss, pss = (int(x) for x in out.split())
        self.rss_mb, self.pss_mb = rss / 1024, pss / 1024


def test_import_100k(tmp_path, monkeypatch):
    n = scale()
    small, full = tmp_path / "small.csv", tmp_path / "full.csv"
    generate(small, max(n // 10, 1000), seed=3)
    generate(full, n)

    # Memory first, before the larger runs raise this process's own high-water mark, and in runs of
    # their own: the monitor's sampling takes CPU the timed run should not lose.
    with PeakMemory() as small_peak:
        run_import(small)
    clear_leads()
    with PeakMemory() as full_peak:
        run_import(full)
    clear_leads()
    if connection.vendor == "postgresql":
        from leadops.forking import can_fork

        # A thread left running by an earlier benchmark would make the import parse in-process.
        assert can_fork(), f"threads still running: {[t.name for t in threading.enumerate()]}"
    seconds, summary = run_import(full)
    assert summary["created"] + summary["merged"] + summary["failed"] == summary["rows"] == n
    assert Lead.objects.count() == summary["created"]
    ours = n / seconds
    floor_rate = n / schema_floor() if connection.vendor == "postgresql" else None
    clear_leads()
    one_process_rate = None
    if connection.vendor == "postgresql":
        from routing import intake

        with monkeypatch.context() as patch:
            patch.setattr(intake, "can_fork", lambda: False)
            one_process_rate = n / run_import(full)[0]
        clear_leads()

    django_rate = n / django_loop(full)
    emit("import_100k", ours, "rows/s", django_rate, ours / django_rate)
    emit("import_100k_vs_django", ours, "rows/s", django_rate, ours / django_rate)
    if connection.vendor == "postgresql":
        copy_rate = n / raw_copy(full)
        emit("import_100k_vs_copy", ours, "rows/s", copy_rate, ours / copy_rate)
        emit("import_100k_vs_schema_floor", ours, "rows/s", floor_rate, ours / floor_rate)
        emit("import_100k_vs_one_process", ours, "rows/s", one_process_rate, ours / one_process_rate)
    emit("import_100k_peak_rss", full_peak.rss_mb, "MB", small_peak.rss_mb, full_peak.rss_mb / small_peak.rss_mb)
    if small_peak.pss_mb:  # kernels without smaps_rollup report no PSS
        emit("import_100k_peak_pss", full_peak.pss_mb, "MB", small_peak.pss_mb, full_peak.pss_mb / small_peak.pss_mb)


ROUTED_RULES = {
    "name": "Intake bench",
    "rules": [
        {"name": "Urgent to directors", "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
         "candidates": {"levels": ["director"]}, "strategy": "round_robin", "sla_minutes": 5},
        {"name": "DACH enterprise", "when": [{"field": "country", "op": "in", "value": ["DE", "AT", "CH"]},
                                             {"field": "company_size", "op": "gte", "value": 1000}],
         "candidates": {"team": "EMEA"}, "strategy": "weighted", "sla_minutes": 60},
        {"name": "Europe", "when": [{"field": "country", "op": "in", "value": ["DE", "AT", "FR", "GB", "ES"]}],
         "candidates": {"team": "EMEA"}, "strategy": "load_balanced"},
        {"name": "Americas", "when": [{"field": "country", "op": "eq", "value": "US"}],
         "candidates": {"team": "Americas"}, "strategy": "round_robin"},
        {"name": "Big deals", "when": [{"field": "value", "op": "gte", "value": 4000}],
         "candidates": {"levels": ["senior"]}, "strategy": "first_available"},
    ],
    "fallback": {"candidates": {"team": "EMEA"}, "strategy": "load_balanced"},
}


def build_routing() -> None:
    teams = [Team.objects.create(name="EMEA"), Team.objects.create(name="Americas")]
    levels = ["junior", "junior", "senior", "director"]
    for i in range(40):
        user = UserFactory(username=f"route{i:02d}")
        Rep.objects.create(user=user, team=teams[i % 2], level=levels[i % 4], weight=1 + i % 3)
    ruleset_publish(ruleset_create_draft(ROUTED_RULES))


def test_import_100k_routed(tmp_path, settings):
    # Notifications are queued for the worker, as in production (tests otherwise deliver them inline,
    # which would time email delivery, not the import).
    settings.TESTING = False
    n = scale()
    full = tmp_path / "full.csv"
    generate(full, n)
    build_routing()

    seconds, summary = run_import(full)
    plain = n / seconds
    clear_leads()
    seconds, summary = run_import(full, route=True)
    routed = n / seconds
    assert summary["created"] + summary["merged"] + summary["failed"] == summary["rows"] == n
    assert summary["assigned"] + summary["pooled"] + summary["unassigned"] == summary["created"]
    assert summary["assigned"] == summary["created"]
    floor = n / schema_floor()
    emit("import_100k_routed", routed, "rows/s", plain, routed / plain)
    emit("import_100k_routed_vs_schema_floor", routed, "rows/s", floor, routed / floor)


def test_api_post_lead_during_import(tmp_path, settings):
    """Routed POSTs while a routed import of the file runs in another process, as a worker runs a web
    upload's job: a lead routed meanwhile waits for the import chunk holding the rule cursors. Baseline:
    the same POSTs before the import."""
    if connection.vendor != "postgresql":
        pytest.skip("the import and the POSTs must share a database server")
    settings.TESTING = False
    full = tmp_path / "full.csv"
    generate(full, scale())
    build_routing()
    post = _api_poster()
    client = Client()
    for i in range(10):
        post(client, f"warm{i}@bench.example")  # connection, roster and rule caches, as a running server's
    quiet = [post(client, f"quiet{i}@bench.example") for i in range(100)]

    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}  # the child is no test: tasks queue
    env.update(DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}", DEBUG="0",
               SECRET_KEY="bench-secret-key-not-for-production-0123456789abcdef")
    busy: list[float] = []
    summary = tmp_path / "summary.json"
    with summary.open("w") as out, subprocess.Popen(
        [sys.executable, "manage.py", "import_leads", str(full), "--json"], cwd=Path(__file__).resolve().parents[2],
        env=env, stdout=out, stderr=subprocess.DEVNULL,
    ) as proc:
        while proc.poll() is None:
            busy.append(post(client, f"busy{len(busy)}@bench.example"))
    assert proc.returncode == 0
    result = json.loads(summary.read_text())
    assert result["assigned"] == result["created"] > 0 and len(busy) >= 20

    quiet50, quiet99 = _percentiles(quiet)
    busy50, busy99 = _percentiles(busy)
    emit("api_post_lead_during_import_p50", busy50, "ms", quiet50, busy50 / quiet50)
    emit("api_post_lead_during_import_p99", busy99, "ms", quiet99, busy99 / quiet99)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _api_poster():
    """A function POSTing one lead through the full stack with an ops token; returns ms."""
    user = UserFactory(username="bench-ops", groups=["Ops"])
    _, raw = ApiToken.issue(user, name="bench")
    headers = {"Authorization": f"Bearer {raw}"}

    def post(client: Client, email: str) -> float:
        body = json.dumps({"email": email, "first_name": "Bench", "country": "DE", "score": 50})
        start = time.perf_counter()
        resp = client.post("/api/leads/", data=body, content_type="application/json", headers=headers)
        elapsed = time.perf_counter() - start
        assert resp.status_code == 201, resp.content
        return elapsed * 1000

    return post


def test_api_post_lead_routed(settings):
    """The same sequential POSTs with a published rule set (the routed import's 5 rules, 40 reps):
    each lead is routed and its explanation returned. Baseline: the same POSTs before publishing."""
    # The owner's notifications are written in the request and their delivery queued for the worker,
    # as in production (tests otherwise deliver them inline).
    settings.TESTING = False
    n = max(50, min(scale() // 200, 500))
    post = _api_poster()
    client = Client()
    plain = [post(client, f"plain{i}@bench.example") for i in range(n)]
    build_routing()
    routed = [post(client, f"routed{i}@bench.example") for i in range(n)]
    assert Lead.objects.filter(email__startswith="routed", owner__isnull=False).count() == n
    plain50, plain99 = _percentiles(plain)
    routed50, routed99 = _percentiles(routed)
    emit("api_post_lead_routed_p50", routed50, "ms", plain50, routed50 / plain50)
    emit("api_post_lead_routed_p99", routed99, "ms", plain99, routed99 / plain99)
    if connection.vendor == "postgresql":
        # Routed leads take turns on the rule cursors: 8 workers at once queue for them.
        together = _post_in_processes(post, 8, n // 8 + 1)
        posted = Lead.objects.filter(email__startswith="proc")
        assert not posted.filter(owner__isnull=True).exists()
        assert LeadEvent.objects.filter(lead__in=posted, kind="routed").count() == posted.count() == 8 * (n // 8 + 1)
        # Every lead so far went to the least loaded EMEA rep: exact turns keep them within one of each other.
        loads = Counter(Lead.objects.filter(owner__isnull=False).values_list("owner", flat=True))
        assert len(loads) == 20 and max(loads.values()) - min(loads.values()) <= 1
        together50, together99 = _percentiles(together)
        emit("api_post_lead_routed_8procs_p50", together50, "ms", routed50, together50 / routed50)
        emit("api_post_lead_routed_8procs_p99", together99, "ms", routed99, together99 / routed99)


def test_api_post_lead():
    n = max(50, min(scale() // 200, 500))
    post = _api_poster()

    orm: list[float] = []
    for i in range(n):
        start = time.perf_counter()
        with transaction.atomic():
            lead = Lead.objects.create(email=f"orm{i}@bench.example", first_name="Bench", country="DE", score=50)
            record_event(lead, LeadEvent.Kind.RECEIVED, source="bench")
        orm.append((time.perf_counter() - start) * 1000)

    client = Client()
    sequential = [post(client, f"seq{i}@bench.example") for i in range(n)]

    concurrent: list[float] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        try:
            c = Client()
            mine = [post(c, f"par{w}-{i}@bench.example") for i in range(n // 8 + 1)]
            with lock:
                concurrent.extend(mine)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(concurrent) == 8 * (n // 8 + 1)

    processes = _post_in_processes(post, 8, n // 8 + 1) if connection.vendor == "postgresql" else []

    orm50, orm99 = _percentiles(orm)
    seq50, seq99 = _percentiles(sequential)
    par50, par99 = _percentiles(concurrent)
    emit("api_post_lead_p50", seq50, "ms", orm50, seq50 / orm50)
    emit("api_post_lead_p99", seq99, "ms", orm99, seq99 / orm99)
    emit("api_post_lead_8way_p50", par50, "ms", seq50, par50 / seq50)
    emit("api_post_lead_8way_p99", par99, "ms", seq99, par99 / seq99)
    if processes:
        proc50, proc99 = _percentiles(processes)
        emit("api_post_lead_8procs_p50", proc50, "ms", seq50, proc50 / seq50)
        emit("api_post_lead_8procs_p99", proc99, "ms", seq99, proc99 / seq99)


def _post_in_processes(post, workers: int, each: int) -> list[float]:
    """`workers` forked processes POSTing at once, each with its own connection: a web server's
    worker processes, which the threads above are not (they queue for one interpreter's lock)."""
    connections.close_all()  # a child must open its own connection, not share this socket
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(workers), ctx.Queue()

    def work(w: int) -> None:
        try:
            client = Client()
            post(client, f"warm{w}@bench.example")  # connection and caches warm, as a running worker's
            barrier.wait(timeout=60)
            results.put([post(client, f"proc{w}-{i}@bench.example") for i in range(each)])
        except BaseException as exc:
            barrier.abort()  # the others stop waiting for this one
            results.put(f"worker {w}: {exc!r}")
        finally:
            connection.close()

    outcomes = run_forked([ctx.Process(target=work, args=(w,), daemon=True) for w in range(workers)], results)
    failures = [o for o in outcomes if isinstance(o, str)]
    assert not failures, failures
    return [ms for latencies in outcomes for ms in latencies]
