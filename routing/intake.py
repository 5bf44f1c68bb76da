"""Lead intake: one pipeline for the import command, the web upload and the API.

parse → map columns → normalise → validate → dedupe → route → write, a chunk at a time, so
memory stays flat however large the file is. Duplicates (an open lead with the same email,
case-insensitive) are merged into the existing lead, which keeps its owner. New leads are routed
in the chunk's own transaction (services.NewLeadRouter): on PostgreSQL decided before they are
written and stored with their owners, on SQLite assigned right after they are inserted.

Writes are set-based: one query finds every duplicate of a chunk; PostgreSQL loads new leads and
their events with COPY straight into the tables; SQLite uses bulk inserts. Each chunk commits on
its own, so a crash loses no reported row and progress is real.

On PostgreSQL three things run at once: a forked worker process parses and cleans the file (where
forking is safe, see leadops.forking.can_fork; otherwise a thread of this process does), this
process looks each chunk's duplicates up and decides its new leads' owners, and a writer thread
writes the previous chunk (see Importer.run, _run_pipelined and _decide_ahead).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.utils import timezone

from leadops.forking import can_fork, iterate_in_fork
from leadops.threads import fewer_collections, responsive_threads
from routing import services
from routing.csvio import EXTRA, FIELDS, FORMULA_START, IGNORE, CsvFile
from routing.engine import iso_text, lead_data
from routing.intake_normalise import LeadCleaner, row_cleaner
from routing.models import ImportJob, Lead, LeadEvent
from routing.models.lead import LEAD_FIELDS
from routing.pgcopy import copy_json, copy_unescape, copy_value

log = logging.getLogger(__name__)

CHUNK_ROWS = 5000
# A routed import's chunk holds the rule cursors until it commits, and a lead routed meanwhile (the
# API, route_pending) waits for it. Measured during a 100k routed import: an API POST's p99 was 937 ms
# with chunks of 5,000 rows, 533 ms with 2,000 and 296 ms with 1,000, for 0-5 % and ~15 % less import
# throughput than 5,000.
ROUTED_CHUNK_ROWS = 2000
_ISO_CACHE = 10_000  # distinct received_at texts kept while parsing
# Fields a duplicate may fill in on the lead it merges into (never owner/status: the lead keeps them).
FILLABLE = [f for f in FIELDS if f not in ("email", "received_at", "source", "priority")]


@dataclass
class ImportResult:
    rows: int = 0
    created: int = 0
    merged: int = 0
    failed: int = 0
    assigned: int = 0
    pooled: int = 0
    unassigned: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The `--json` summary of CONTRACT §4, keys exactly as promised."""
        return {
            "rows": self.rows, "created": self.created, "merged": self.merged, "failed": self.failed,
            "assigned": self.assigned, "pooled": self.pooled, "unassigned": self.unassigned,
            "errors": self.errors,
        }


class _Row:
    """One valid CSV row on its way to the database. Rows parsed in a forked worker arrive as their
    COPY text alone (`copy_body`, with the email and received time beside it); `data`, the cleaned
    values, is read back from that text only for the few rows a merge needs it for."""

    __slots__ = ("_data", "copy_body", "email", "lead_id", "merges", "received_iso", "row")

    def __init__(self, row: int, data: dict[str, Any] | None = None, *, email: str | None = None,
                 copy_body: str | None = None, received_iso: str | None = None) -> None:
        self.row = row
        self._data = data
        if email is None:
            email = data["email"] if data is not None else ""
        self.email = email
        self.copy_body = copy_body  # the PostgreSQL COPY text of its values, made while parsing
        self.received_iso = received_iso
        self.merges: list[_Row] = []
        self.lead_id: int | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = _decode_body(self.copy_body)  # type: ignore[arg-type]
        return self._data

    def fields(self, names: frozenset[str]) -> dict[str, Any]:
        """At least `names` of the cleaned values, for deciding the lead (a new dict)."""
        if self._data is not None:
            return dict(self._data)
        return _decode_fields(self.copy_body, names)  # type: ignore[arg-type]


def _emails(rows: Iterable[_Row]) -> set[str]:
    """The (normalised) emails of a chunk's rows that have one."""
    return {r.email for r in rows if r.email}


def _ids_by_email(creators: Iterable[_Row]) -> dict[str, int]:
    """A chunk's new leads by email (numbered already), as `_recent` keeps them."""
    return {c.email: c.lead_id for c in creators if c.email}  # type: ignore[misc]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class _Ahead(NamedTuple):
    """A chunk's new leads as the main thread predicted and decided them (Importer._decide_ahead)."""

    shape: list[tuple[int, list[int]]]  # (row, rows merged into it) of each new lead, in file order
    ids: list[int]
    plan: services.AheadPlan


class Importer:
    """Runs one CSV through the pipeline. `on_progress(result, rows_done)` is called per chunk."""

    def __init__(
        self,
        *,
        source: str,
        actor=None,
        route: bool = True,
        dry_run: bool = False,
        now: dt.datetime | None = None,
        job: ImportJob | None = None,
        chunk_rows: int | None = None,
        on_progress: Callable[[ImportResult, int], None] | None = None,
        unescape_formulas: bool = False,
    ) -> None:
        self.source = source
        self.actor = actor
        self.route = route
        self.dry_run = dry_run
        self.now = now or timezone.now()
        self.job = job
        self.chunk_rows = chunk_rows or (ROUTED_CHUNK_ROWS if route and not dry_run else CHUNK_ROWS)
        self.on_progress = on_progress
        # A retry uploads our own rejected-rows export, whose formula-like cells we prefixed with "'".
        self.unescape_formulas = unescape_formulas
        self.result = ImportResult()
        self.cleaner = LeadCleaner(self.now)
        # Only a dry run remembers emails across chunks: a real run finds earlier chunks'
        # leads in the database, which keeps memory flat.
        self._dry_seen: set[str] = set()
        # Per run (set again by run()): rows handed to the writer so far, the row cleaner for the
        # file's columns, whether rows are formatted for COPY while parsed, and the pipelined run's
        # writer state (see _run_pipelined).
        self._done = 0
        self._fast: Callable[[list[str]], dict[str, Any] | None] = lambda cells: None
        self._copy_text = False
        self._committed = 0  # chunks the writers have committed (always the first ones); only writers set it
        self._writer_failed = False
        self._progress = threading.Condition()  # notified when _committed, _recent or _writer_failed change
        self._recent: dict[int, dict[str, int]] = {}  # chunk index -> {email: new lead id}, writers only
        self._rewritten: dict[int, dict[str, int]] = {}  # chunk index -> its new leads, if written again alone
        self._failed_at = sys.maxsize  # the first chunk a writer failed on (_write_in_lane)
        self._predicted: dict[int, set[str]] = {}  # chunk index -> emails of its predicted new leads, main thread only
        self._iso: dict[dt.datetime, str] = {}  # received_at -> its ISO text, for the COPY and the event
        # Each chunk's new leads are routed in the chunk's own transaction.
        self._router = services.NewLeadRouter(now=self.now, actor=actor) if route and not dry_run else None

    # -- parse and validate -------------------------------------------------------------
    def _plan(self, csvfile: CsvFile) -> list[tuple[int, str, str]]:
        """(cell index, header, target) for every column that is not ignored; computed once per file."""
        return [
            (i, header, csvfile.mapping.get(header, EXTRA))
            for i, header in enumerate(csvfile.headers)
            if csvfile.mapping.get(header, EXTRA) != IGNORE
        ]

    def _parse(
        self, csvfile: CsvFile, plan: list[tuple[int, str, str]], row: int, cells: list[str] | str
    ) -> _Row | None:
        headers = csvfile.headers
        if isinstance(cells, str):
            self._fail(row, "", cells)
            return None
        if len(cells) != len(headers):
            if len(cells) > len(headers):
                self._fail(row, f"column {len(headers) + 1}",
                           f"row has {len(cells)} cells but the header has {len(headers)}")
            else:
                self._fail(row, headers[len(cells)],
                           f"row has {len(cells)} cells but the header has {len(headers)}")
            return None
        if self.unescape_formulas:
            cells = [c[1:] if c[:1] == "'" and c[1:2] in FORMULA_START else c for c in cells]
        # The fast path recognises a clean row; anything else (errors included) goes the full way.
        data = self._fast(cells)
        if data is None:
            data = self._clean_slow(csvfile, plan, row, cells)
            if data is None:
                return None
        if not data["source"]:
            data["source"] = self.source
        if not self._copy_text:
            return _Row(row, data)
        received = data["received_at"]  # a file repeats its times: each is formatted once
        if (at := self._iso.get(received)) is None:
            if len(self._iso) >= _ISO_CACHE:
                self._iso.clear()
            at = self._iso[received] = received.isoformat()
        return _Row(row, data, copy_body=_copy_body(data, at), received_iso=at)

    def _clean_slow(
        self, csvfile: CsvFile, plan: list[tuple[int, str, str]], row: int, cells: list[str]
    ) -> dict[str, Any] | None:
        values: dict[str, Any] = {}
        extra: dict[str, str] = {}
        for i, header, target in plan:
            cell = cells[i]
            if target == EXTRA:
                if cell := cell.strip():
                    extra[header] = cell
            else:
                values[target] = cell
        values["extra"] = extra
        data, errors = self.cleaner.clean(values)
        if errors:
            by_field = {t: h for h, t in csvfile.mapping.items()}
            messages: dict[str, list[str]] = {}
            for fname, message in errors:
                messages.setdefault(message, []).append(by_field.get(fname, fname))
            for message, columns in messages.items():
                self._fail(row, " / ".join(columns), message, count=False)
            self.result.failed += 1
            return None
        return data

    def _fail(self, row: int, column: str, message: str, *, count: bool = True) -> None:
        self.result.errors.append({"row": row, "column": column, "message": message})
        if count:
            self.result.failed += 1

    # -- the run ---------------------------------------------------------------------------
    def run(self, csvfile: CsvFile) -> ImportResult:
        plan = self._plan(csvfile)
        columns = {target: i for i, _, target in plan if target != EXTRA}  # a later column wins, as in _clean_slow
        self._fast = row_cleaner(self.cleaner, columns, [(header, i) for i, header, target in plan if target == EXTRA])
        parsed = (
            (len(chunk), [r for r in (self._parse(csvfile, plan, row, cells) for row, cells in chunk) if r is not None])
            for chunk in _chunks(csvfile.records, self.chunk_rows)
        )
        self._done = 0
        self._copy_text = not self.dry_run and connection.vendor == "postgresql"
        # A forked worker inherits the threshold with everything else.
        with fewer_collections():
            if self.dry_run or connection.vendor != "postgresql" or connection.in_atomic_block:
                self._consume_all(parsed)
            elif can_fork():
                # Parsing is the larger half of the import's Python: in a forked worker it runs on a core
                # of its own instead of taking turns with the writer at this interpreter's lock.
                with iterate_in_fork(lambda: self._for_parent(parsed)) as chunks:
                    self._run_pipelined(parsed if chunks is None else self._from_worker(chunks))
            else:
                self._run_pipelined(parsed)
        return self.result

    def _for_parent(self, parsed: Iterator[tuple[int, list[_Row]]]) -> Iterator[tuple[int, list[tuple], list, int]]:
        """In the forked worker: each parsed chunk as plain tuples (a tenth of the cost of pickling the
        rows themselves), with the rows that failed in it. Nothing is kept here once sent."""
        for n, valid in parsed:
            # Equal times share one text (see _parse), which pickle then sends once per chunk.
            rows = [(r.row, r.email, r.copy_body, r.received_iso) for r in valid]
            yield n, rows, self.result.errors, self.result.failed
            self.result.errors, self.result.failed = [], 0

    def _from_worker(self, chunks: Iterator[tuple[int, list[tuple], list, int]]) -> Iterator[tuple[int, list[_Row]]]:
        """Here: the worker's chunks as rows again, their failures added to this run's result."""
        for n, rows, errors, failed in chunks:
            self.result.errors += errors
            self.result.failed += failed
            yield n, [_Row(row, email=email, copy_body=body, received_iso=at) for row, email, body, at in rows]

    def _run_pipelined(self, parsed: Iterator[tuple[int, list[_Row]]]) -> None:
        """Take the next chunk (from the parsing worker, or parsed right here where a fork is not
        available) while the database writes the previous one (psycopg waits without the GIL). A writer
        thread has its own connection and takes chunks in order; the queue of one keeps memory flat.
        A routed import has one writer; an import without routing has two, which write neighbouring
        chunks at once and commit them in order (`_write_in_lane`).

        This thread also looks up each chunk's duplicates among the stored leads, on its own
        connection, so the writer's turn is the writes alone (the lookup was a sixth of it). That lookup
        may run before the writer has committed the one or two chunks ahead of it: it notes how many
        chunks were committed when it ran, and the writer completes it from the emails of the leads it
        created since (`_recent`), so in-file duplicates are still found however far apart they are."""
        chunks: queue.Queue = queue.Queue(maxsize=1)
        failures: list[BaseException] = []
        self._committed, self._writer_failed, self._recent, self._predicted = 0, False, {}, {}
        self._rewritten, self._failed_at = {}, sys.maxsize
        # A routed import has one writer: each chunk holds the rule cursors until it commits.
        lanes = self._router is None

        def writer(write: Callable[..., None]) -> None:
            index = -1  # of the chunk in hand, with two writers (the first item of theirs)
            try:
                for chunk in iter(chunks.get, None):
                    index = chunk[0] if lanes else -1
                    write(*chunk)
            except BaseException as exc:
                failures.append(exc)
                with self._progress:
                    self._writer_failed = True
                    if lanes:  # the chunks after it cannot commit; the one before it still can
                        self._failed_at = min(self._failed_at, index)
                    self._progress.notify_all()
                while chunks.get() is not None:  # let the parser finish putting
                    pass
            finally:
                connection.close()

        threads = [
            threading.Thread(target=writer, args=(self._write_in_lane if lanes else self._consume,),
                             name=f"intake-writer-{i}", daemon=True)
            for i in range(2 if lanes else 1)
        ]
        with responsive_threads():
            for thread in threads:
                thread.start()
            try:
                for index, (n, valid) in enumerate(parsed):
                    if failures:
                        break
                    committed = self._committed  # read before the query: all of these are visible to it
                    existing = _open_leads_by_email(_emails(valid))
                    if lanes:
                        chunks.put((index, n, valid, (committed, existing)))
                        continue
                    ahead = self._decide_ahead(index, valid, committed, existing) if self._router else None
                    chunks.put((n, valid, (committed, existing), ahead))
            finally:
                for _ in threads:
                    chunks.put(None)
                for thread in threads:
                    thread.join()
        if failures:
            raise failures[0]

    def _await(self, index: int, ready: Callable[[], bool]) -> None:
        """For chunk `index`: wait until `ready()` (checked whenever the writers' progress changes), or
        stop if a chunk before it failed. The caller holds `_progress`."""
        self._progress.wait_for(lambda: ready() or self._failed_at < index)
        if not ready():
            raise _OtherLaneFailed

    def _write_in_lane(self, index: int, n: int, valid: list[_Row], lookup: tuple[int, dict[str, int]]) -> None:
        """Write chunk `index` as one of two writers (an import without routing): each has its own
        connection and transaction, so PostgreSQL writes one chunk while it commits the one before
        (the commit checks every event's lead: a fifth of a chunk's time) on its other core.

        Chunks still commit in file order, and the dedupe stays exact: this chunk waits for the new
        leads of the chunk before it (`_recent`, published as soon as their ids are drawn) before its
        own dedupe, writes its leads and events, then waits for that chunk to commit before it locks
        the open leads it merges into and commits. So a chunk holds no lead another writer may want
        while it waits: the cycle (it waits for the chunk before, which waits for a lead another
        import holds, which waits for a lead this chunk holds) cannot form, and PostgreSQL could not
        see it if it did. If a lead it merges into was closed meanwhile, or the chunk before was
        written again and now has other new leads for this chunk's emails, the chunk is rolled back
        and written again alone, now that every chunk before it is committed (`_write_chunk`).

        A chunk commits before `on_progress` hears of it: if that fails, the import stops with the
        chunk stored, as with one writer.
        """
        committed_at_lookup, _ = lookup
        emails = _emails(valid)
        try:
            with transaction.atomic():
                with self._progress:  # the other writer reads, prunes and writes _recent too
                    self._await(index, lambda: index - 1 < committed_at_lookup or index - 1 in self._recent)
                    existing = self._complete_lookup(valid, *lookup)
                    before = self._recent.get(index - 1, {})
                    relied_on = {email: before[email] for email in emails if email in before}
                creators, into_existing = self._dedupe(valid, existing)
                self._fold_repeats(creators)
                self._number(creators)
                with self._progress:
                    self._recent[index] = _ids_by_email(creators)
                    self._progress.notify_all()
                merged = _write_chunk_pg(creators, into_existing, {}, source=self.source, job=self.job,
                                         held=not self.route, update_existing=False)
                with self._progress:
                    self._await(index, lambda: self._committed >= index)
                    again = self._rewritten.get(index - 1) if index - 1 >= committed_at_lookup else None
                if again is not None and {e: again[e] for e in emails if e in again} != relied_on:
                    raise _Rewrite
                if _still_open(existing) != existing:
                    raise _Rewrite
                if into_existing:
                    _merge_into_existing_pg(into_existing, release_held=self.route)
        except _Rewrite:
            with self._progress:
                del self._recent[index]
            creators = self._write_chunk(valid)  # counts its own leads and merges
            with self._progress:
                self._recent[index] = self._rewritten[index] = _ids_by_email(creators)
        else:
            self.result.created += len(creators)
            self.result.merged += merged
            self.result.unassigned += len(creators)
        self.result.rows += n
        self._done += n
        if self.on_progress:
            self.on_progress(self.result, self._done)
        with self._progress:
            self._committed = index + 1
            self._progress.notify_all()

    def _decide_ahead(self, index: int, valid: list[_Row], committed: int, existing: dict[str, int]) -> _Ahead | None:
        """In the main thread, while the writer writes the chunks before: predict which rows of chunk
        `index` create leads (the lookup's open leads and the leads of the chunks still in flight are
        merged into), draw their ids and decide them (`NewLeadRouter.plan_ahead`). The writer uses the
        plan only if its own dedupe finds exactly these new leads and merges (`_write_chunk`)."""
        router = self._router
        assert router is not None

        def settled() -> None:  # every chunk before this one committed (or the writer failed)
            with self._progress:
                self._progress.wait_for(lambda: self._committed >= index or self._writer_failed)

        if not router.ready_ahead(settled):
            self._predicted.clear()
            return None
        for i in [i for i in self._predicted if i < committed]:
            del self._predicted[i]  # committed: the lookup saw those leads
        in_flight: set[str] = set().union(*self._predicted.values())
        creators, merges, _ = _split(valid, lambda email: email in existing or email in in_flight)
        self._predicted[index] = set(merges)
        if not creators:
            return None
        leads: list[tuple[int, dict[str, Any]]] = []
        with connection.cursor() as cur:
            ids = _lead_ids(cur, len(creators))
        wanted = router.fields_read()
        for pk, r in zip(ids, creators, strict=True):
            data = r.fields(wanted)
            for dup in (merges.get(r.email) or ()) if r.email else ():
                _fill_blanks(data, dup.fields(wanted))  # as the writer fills the row's own values
            leads.append((pk, data))
        plan = router.plan_ahead(leads, settled)
        return _Ahead([(r.row, [d.row for d in merges.get(r.email, ())] if r.email else []) for r in creators],
                      ids, plan)

    def _consume(self, n: int, valid: list[_Row], lookup: tuple[int, dict[str, int]] | None = None,
                 ahead: _Ahead | None = None) -> None:
        self.result.rows += n
        if self.dry_run:
            self._dry_chunk(valid)
        else:
            self._write_chunk(valid, lookup, ahead)
        self._done += n
        if self.on_progress:
            self.on_progress(self.result, self._done)

    def _consume_all(self, chunks: Iterable[tuple]) -> None:
        for chunk in chunks:
            self._consume(*chunk)

    def _dedupe(self, valid: list[_Row], existing: dict[str, int]) -> tuple[list[_Row], dict[int, list[_Row]]]:
        """Split a chunk into new leads (with in-file duplicates folded in) and merges into old ones."""
        creators, repeats, old = _split(valid, existing.__contains__)
        for c in creators:
            if c.email:
                c.merges = repeats[c.email]
        into_existing: dict[int, list[_Row]] = {}
        for r in old:
            into_existing.setdefault(existing[r.email], []).append(r)
        return creators, into_existing

    def _dry_chunk(self, valid: list[_Row]) -> None:
        emails = _emails(valid)
        existing = _open_leads_by_email(emails - self._dry_seen)
        existing.update(dict.fromkeys(self._dry_seen & emails, 0))
        creators, into_existing = self._dedupe(valid, existing)
        self.result.created += len(creators)
        self.result.merged += sum(len(c.merges) for c in creators) + sum(len(v) for v in into_existing.values())
        self._dry_seen |= emails

    def _write_chunk(self, valid: list[_Row], lookup: tuple[int, dict[str, int]] | None = None,
                     ahead: _Ahead | None = None) -> list[_Row]:
        """Dedupe, write and route one chunk in one transaction; returns its new leads. `lookup` and
        `ahead` are the pipelined run's: (chunks committed when the main thread looked the chunk's emails
        up, the open leads it found), and its prediction of the chunk's new leads with their routing decided."""
        index = self._committed if lookup is not None else 0
        if not valid:
            self._finish_chunk(index, lookup, [])
            return []
        router = self._router
        routed: dict[str, int] | None = None
        with transaction.atomic():
            if router is not None:
                router.lock()  # the cursors before any lead row (see NewLeadRouter)
            if lookup is None:
                existing = _open_leads_by_email(_emails(valid))
                if connection.vendor == "postgresql":
                    existing = _still_open(existing)
            else:
                existing = _still_open(self._complete_lookup(valid, *lookup))
            creators, into_existing = self._dedupe(valid, existing)
            self._fold_repeats(creators)
            if connection.vendor == "postgresql":
                merged = _write_chunk_pg(creators, into_existing, self._owners(creators, ahead), source=self.source,
                                         job=self.job, held=not self.route)
            else:
                # SQLite: inserted unassigned, then assigned by finish() in the same transaction.
                _insert_leads_orm(creators, source=self.source, job=self.job, held=not self.route)
                if router is not None:
                    router.decide([(r.lead_id, r.data) for r in creators])  # type: ignore[misc]
                merge_events = [
                    _merge_event(c.lead_id, dup, self.source)  # type: ignore[arg-type]
                    for c in creators for dup in c.merges
                ]
                if into_existing:
                    merge_events += _merge_into_existing(into_existing, self.source, release_held=self.route)
                LeadEvent.objects.bulk_create(merge_events, batch_size=1000)
                merged = len(merge_events)
            if router is not None:
                routed = router.finish(stored=connection.vendor == "postgresql")
        self.result.created += len(creators)
        self.result.merged += merged
        if routed is None:
            # Not routed means left unassigned, so created == assigned + pooled + unassigned holds.
            self.result.unassigned += len(creators)
        else:
            self.result.assigned += routed["assigned"]
            self.result.pooled += routed["pooled"]
            self.result.unassigned += routed["unassigned"]
        self._finish_chunk(index, lookup, creators)
        return creators

    def _owners(self, creators: list[_Row], ahead: _Ahead | None) -> dict[int, services.AssignRow]:
        """Number the chunk's new leads and decide them before they are written (PostgreSQL, which
        stores them with their owners): with the main thread's plan if the writer's dedupe found
        exactly the leads it predicted and the plan still holds, else here, under the locks."""
        router = self._router
        if router is not None and ahead is not None:
            shape = [(r.row, [d.row for d in r.merges]) for r in creators]
            owners = router.take(ahead.plan, fits=shape == ahead.shape)
            if owners is not None:
                for pk, r in zip(ahead.ids, creators, strict=True):
                    r.lead_id = pk
                return owners
        self._number(creators)
        return router.decide([(r.lead_id, r.data) for r in creators]) if router and creators else {}

    @staticmethod
    def _fold_repeats(creators: list[_Row]) -> None:
        """Fill each new lead's blanks from the rows of the chunk repeating it."""
        for c in creators:
            for dup in c.merges:
                if _fill_blanks(c.data, dup.data) or dup.data.get("extra"):
                    c.copy_body = None  # its values changed since they were formatted

    @staticmethod
    def _number(creators: list[_Row]) -> None:
        """Draw the new leads' ids (PostgreSQL, which writes them with COPY)."""
        if not creators:
            return
        with connection.cursor() as cur:
            ids = _lead_ids(cur, len(creators))
        for pk, r in zip(ids, creators, strict=True):
            r.lead_id = pk

    def _complete_lookup(self, valid: list[_Row], committed: int, existing: dict[str, int]) -> dict[str, int]:
        """Add the leads created by chunks the lookup could not see yet (index >= committed), oldest first."""
        wanted: set[str] | None = None
        for index in sorted(self._recent):
            if index < committed:
                del self._recent[index]  # every later lookup sees it in the database
                continue
            created = self._recent[index]
            if wanted is None:
                wanted = _emails(valid) - existing.keys()
            # Set operations, not a loop over the chunk's rows for each recent chunk: this runs in the
            # writer, whose Python time the whole import waits for.
            for email in wanted & created.keys():
                existing[email] = created[email]
            wanted -= created.keys()
        return existing

    def _finish_chunk(self, index: int, lookup: tuple[int, dict[str, int]] | None, creators: list[_Row]) -> None:
        if lookup is None:
            return
        self._recent[index] = _ids_by_email(creators)
        with self._progress:
            self._committed = index + 1
            self._progress.notify_all()


def _split(valid: list[_Row], known: Callable[[str], bool]) -> tuple[list[_Row], dict[str, list[_Row]], list[_Row]]:
    """The dedupe of one chunk: its new leads in file order, the later rows repeating each new lead
    (by email; every new lead with an email has an entry), and the rows whose email is `known` (an
    open lead's already). Changes no row: the writer folds the repeats in, the main thread predicts."""
    creators: list[_Row] = []
    repeats: dict[str, list[_Row]] = {}
    old: list[_Row] = []
    for r in valid:
        email = r.email
        if email and known(email):
            old.append(r)
        elif email and email in repeats:
            repeats[email].append(r)
        else:
            creators.append(r)
            if email:
                repeats[email] = []
    return creators, repeats, old


def _open_leads_by_email(emails: set[str]) -> dict[str, int]:
    """The oldest open lead per email, for a whole chunk in one query."""
    if not emails:
        return {}
    found: dict[str, int] = {}
    if connection.vendor == "postgresql":
        # One JSON text parameter instead of thousands of placeholders (or an array psycopg adapts
        # element by element in Python): cheap to build, send and plan; the email index does the rest.
        # The status is checked here, not in SQL: without statistics on the table (a fresh import, or
        # autovacuum behind) the planner took the status condition for selective and ANDed the email
        # probes with a scan of every open lead in lead_status_received, a cost that grew with the table.
        # The closed leads of these emails come back too: a few rows per returning person.
        with connection.cursor() as cur:
            cur.execute(
                "SELECT email, id, status FROM routing_lead"
                " WHERE email = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))) ORDER BY id",
                [json.dumps(list(emails))],
            )
            open_statuses = set(Lead.OPEN_STATUSES)
            rows = [(email, pk) for email, pk, status in cur.fetchall() if status in open_statuses]
    else:
        rows = Lead.objects.open().filter(email__in=emails).order_by("id").values_list("email", "id")
    for email, pk in rows:
        found.setdefault(email.lower(), pk)
    return found


class _OtherLaneFailed(Exception):
    """The other writer failed on a chunk before this one: this one stops too (its chunk rolls back)."""


class _Rewrite(Exception):
    """A chunk's dedupe no longer holds (see Importer._write_in_lane): roll it back and write it again."""


class _LeadClosed(Exception):
    """A lead a lookup found was closed (or deleted) before the writer could lock it."""


def _still_open(existing: dict[str, int]) -> dict[str, int]:
    """Inside the writer's transaction: lock the leads a lookup found and keep them if they are all
    still open. A lead closed (or deleted) since the lookup must not take a merge: it would never be
    routed (or its event would break the lead constraint). The lock keeps them open until the chunk
    commits: a rep marking one won waits for the merge instead of slipping in between this check and
    the merge's UPDATE.

    When one was closed, its email is looked up again and every lead is locked afresh. The attempt's
    savepoint is rolled back first, which releases the locks it took: locking the new ones while
    holding those could take a lower id after a higher one and deadlock with another import."""
    while True:
        found = set(existing.values())
        open_ids: set[int] = set()
        try:
            with transaction.atomic():
                open_ids = _lock_open(found)
                if open_ids != found:
                    raise _LeadClosed
                return existing
        except _LeadClosed:
            kept = {email: pk for email, pk in existing.items() if pk in open_ids}
            existing = kept | _open_leads_by_email({email for email in existing if email not in kept})


def _lock_open(ids: set[int]) -> set[int]:
    """Lock these leads, in id order, and return the ones that are open."""
    if not ids:
        return set()
    with connection.cursor() as cur:
        # The status is checked here, not in the WHERE: given both, the planner (its statistics stale in
        # the middle of a large import) read the status index's every open lead, which grew chunk by chunk.
        cur.execute("SELECT id, status FROM routing_lead WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [list(ids)])
        return {pk for pk, status in cur.fetchall() if status in Lead.OPEN_STATUSES}


def _fill_blanks(target: dict[str, Any], dup: dict[str, Any]) -> list[str]:
    filled = []
    for name in FILLABLE:
        if target.get(name) in ("", None) and dup.get(name) not in ("", None):
            target[name] = dup[name]
            filled.append(name)
    if dup.get("extra"):
        target["extra"] = {**dup["extra"], **(target.get("extra") or {})}
    return filled


def _merge_event(lead_id: int, dup: _Row, source: str) -> LeadEvent:
    return LeadEvent(
        lead_id=lead_id, kind=LeadEvent.Kind.MERGED, at=timezone.now(),
        detail={"source": source, "row": dup.row, "email": dup.email},
    )


_TEXT_FILLABLE = [f for f in FILLABLE if f not in ("company_size", "score", "value")]


@contextmanager
def _index_probes_only(cur) -> Iterator[None]:
    """Plan the statements inside as index probes (nested loops): in the middle of a bulk load the
    planner's statistics lag far behind the table, and it chose to hash the whole table for the
    merge UPDATE instead, a cost that grew chunk by chunk until autoanalyze caught up.

    The settings are put back afterwards, not left to the transaction's end: on the unpipelined path
    the chunk's transaction is a savepoint inside the caller's, and releasing a savepoint keeps what
    SET LOCAL set, so routing and the caller's own queries would have run without hash joins."""
    cur.execute(
        "SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin'),"
        " set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
    )
    hashjoin, mergejoin, _, _ = cur.fetchone()
    yield
    # Not in a `finally`: after an error the transaction is aborted, and rolling it (or the savepoint)
    # back undoes the settings anyway.
    cur.execute("SELECT set_config('enable_hashjoin', %s, true), set_config('enable_mergejoin', %s, true)",
                [hashjoin, mergejoin])


def _merge_into_existing_pg(into: dict[int, list[_Row]], *, release_held: bool) -> None:
    """The same as _merge_into_existing in one UPDATE … FROM unnest(arrays): blanks filled in SQL.
    (The merged events go into the chunk's event COPY.)"""
    from psycopg.types.json import Jsonb

    ids, counts, extras = [], [], []
    columns: dict[str, list[Any]] = {name: [] for name in FILLABLE}
    for pk, dups in into.items():
        folded: dict[str, Any] = {name: None for name in FILLABLE}
        folded["extra"] = {}
        for dup in dups:
            _fill_blanks(folded, dup.data)
        ids.append(pk)
        counts.append(len(dups))
        extras.append(Jsonb(folded["extra"]))
        for name in FILLABLE:
            value = folded[name]
            columns[name].append(("" if value is None else value) if name in _TEXT_FILLABLE else value)
    text_sets = ", ".join(f"{n} = CASE WHEN l.{n} = '' THEN v.{n} ELSE l.{n} END" for n in _TEXT_FILLABLE)
    text_arrays = ", ".join("%s::text[]" for _ in _TEXT_FILLABLE)
    with connection.cursor() as cur, _index_probes_only(cur):
        cur.execute(
            f"UPDATE routing_lead AS l SET merged_count = l.merged_count + v.n, updated_at = %s, {text_sets},"
            " routing_held = l.routing_held AND NOT %s,"
            " company_size = COALESCE(l.company_size, v.company_size), score = COALESCE(l.score, v.score),"
            " value = COALESCE(l.value, v.value), extra = v.extra || l.extra"
            f" FROM unnest(%s::bigint[], %s::int[], {text_arrays}, %s::int[], %s::int[], %s::numeric[], %s::jsonb[])"
            f" AS v(id, n, {', '.join(_TEXT_FILLABLE)}, company_size, score, value, extra)"
            " WHERE l.id = v.id",
            [timezone.now(), release_held, ids, counts, *(columns[n] for n in _TEXT_FILLABLE), columns["company_size"],
             columns["score"], columns["value"], extras],
        )


def _merge_into_existing(into: dict[int, list[_Row]], source: str, *, release_held: bool) -> list[LeadEvent]:
    """Fill the existing leads' blank fields from their duplicates and count the touches. A routed
    import (`release_held`) ends the hold of leads an earlier import held: route_pending takes them."""
    leads = list(Lead.objects.select_for_update().filter(pk__in=into)
                 .only(*FILLABLE, "merged_count", "extra", "routing_held"))
    changed: set[str] = {"merged_count", "updated_at"}
    if release_held:
        changed.add("routing_held")
    now = timezone.now()
    for lead in leads:
        data = {name: getattr(lead, name) for name in FILLABLE}
        data["extra"] = lead.extra
        for dup in into[lead.pk]:
            for name in _fill_blanks(data, dup.data):
                setattr(lead, name, data[name])
                changed.add(name)
            if data["extra"] != lead.extra:
                lead.extra = data["extra"]
                changed.add("extra")
        lead.merged_count += len(into[lead.pk])
        lead.updated_at = now
        if release_held:
            lead.routing_held = False
    Lead.objects.bulk_update(leads, sorted(changed), batch_size=500)
    return [_merge_event(pk, dup, source) for pk, dups in into.items() for dup in dups]


def _lead_kwargs(r: _Row, job: ImportJob | None, held: bool) -> dict[str, Any]:
    d = r.data
    return {**{name: d[name] for name in FIELDS}, "extra": d["extra"], "merged_count": len(r.merges),
            "import_job": job, "routing_held": held}


def _insert_leads_orm(creators: list[_Row], *, source: str, job: ImportJob | None, held: bool) -> None:
    leads = Lead.objects.bulk_create([Lead(**_lead_kwargs(r, job, held)) for r in creators], batch_size=500)
    for r, lead in zip(creators, leads, strict=True):
        r.lead_id = lead.pk
    LeadEvent.objects.bulk_create(
        [
            LeadEvent(lead_id=r.lead_id, kind=LeadEvent.Kind.RECEIVED, at=r.data["received_at"],
                      detail={"source": source, "row": r.row})
            for r in creators
        ],
        batch_size=1000,
    )


_TEXT_FIELDS = [f for f in FIELDS if f not in ("company_size", "score", "value", "received_at")]
# routing_lead columns in the order the lead COPY writes them. Django sets no database defaults,
# so the bookkeeping columns of a new lead are written out too.
_LEAD_COPY = ["id", *_TEXT_FIELDS, "company_size", "score", "value", "received_at", "extra", "merged_count",
              "import_job_id", "status", "escalation_step", "reassign_count", "pool_stage", "routing_held",
              "created_at", "updated_at", "owner_id", "assigned_at", "routed_at", "rule_id", "sla_due_at"]
_BODY_TABS = len(_TEXT_FIELDS) + 4
_seq_names: dict[str, str] = {}


def _copy_body(d: dict[str, Any], received_iso: str | None = None) -> str:
    """A lead's COPY text from email to extra (the columns between id and merged_count).

    Formatted by hand rather than by psycopg's per-value adapters: a clean row is one join, and only a
    row with a tab, newline, backslash or NUL in a value takes the escaping path.
    """
    size, score, value, extra = d["company_size"], d["score"], d["value"], d["extra"]
    body = "\t".join((
        d["email"], d["first_name"], d["last_name"], d["phone"], d["company"], d["title"], d["country"],
        d["region"], d["postcode"], d["industry"], d["product"], d["source"], d["priority"],
        "\\N" if size is None else str(size), "\\N" if score is None else str(score),
        "\\N" if value is None else str(value), received_iso or d["received_at"].isoformat(),
        json.dumps(extra) if extra else "{}",
    ))
    # Clean unless a value holds a tab (too many tabs), a backslash (more than the \N NULLs), a line
    # break or a NUL; then every value is escaped one by one.
    if body.count("\t") != _BODY_TABS or body.count("\\") != (size is None) + (score is None) + (value is None) \
            or "\n" in body or "\r" in body or "\x00" in body:
        body = "\t".join(copy_value(v) for v in (
            *(d[name] for name in _TEXT_FIELDS), size, score, value, d["received_at"], json.dumps(extra),
        ))
    return body


def _decode_body(body: str) -> dict[str, Any]:
    """The cleaned values back from `_copy_body`'s text: its exact inverse for what the cleaner makes
    (text without NUL, which COPY text cannot hold and `_copy_body` drops)."""
    return _decode_fields(body, _BODY_FIELDS)


def _decode_fields(body: str, names: Iterable[str]) -> dict[str, Any]:
    """`names` of the cleaned values in `_copy_body`'s text (names it does not hold are left out):
    deciding a lead reads the few fields its rules test, and decoding all 18 was a tenth of the time
    of the thread that decides a routed import."""
    values = body.split("\t")
    return {name: _BODY_READERS[name](values[_BODY_INDEX[name]]) for name in names if name in _BODY_INDEX}


def _read_number(text: str) -> int | None:
    return None if text == "\\N" else int(text)


# `_copy_body`'s columns, and how each is read back.
_BODY_FIELDS = [*_TEXT_FIELDS, "company_size", "score", "value", "received_at", "extra"]
_BODY_INDEX = {name: i for i, name in enumerate(_BODY_FIELDS)}
_BODY_READERS: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(_TEXT_FIELDS, copy_unescape),
    "company_size": _read_number,
    "score": _read_number,
    "value": lambda text: None if text == "\\N" else Decimal(text),
    "received_at": dt.datetime.fromisoformat,
    "extra": lambda text: json.loads(copy_unescape(text)),
}


def _lead_ids(cur, n: int) -> list[int]:
    """n ids from routing_lead's sequence in one round trip (not contiguous: other writers draw too)."""
    alias = connection.alias
    if alias not in _seq_names:
        cur.execute("SELECT pg_get_serial_sequence('routing_lead', 'id')")
        _seq_names[alias] = cur.fetchone()[0]
    # The regclass is resolved once for the statement, not once per row (that was 5× slower); the ids
    # come back as one text, not 5,000 rows for psycopg to load one by one while holding the GIL.
    cur.execute("SELECT string_agg(nextval(%s::regclass)::text, ',') FROM generate_series(1, %s)",
                [_seq_names[alias], n])
    return [int(pk) for pk in cur.fetchone()[0].split(",")]


def _write_chunk_pg(
    creators: list[_Row], into_existing: dict[int, list[_Row]], owners: dict[int, services.AssignRow], *,
    source: str, job: ImportJob | None, held: bool, update_existing: bool = True,
) -> int:
    """Write a chunk's new leads (numbered already: `_Row.lead_id`), their `received` events and every
    `merged` event with two COPYs straight into the real tables (no staging table, no INSERT … SELECT),
    plus one UPDATE for the leads that duplicates merged into. Returns the number of merged events.

    The leads in `owners` (lead id → the routing decision's row) are written assigned to their owner.
    Without `update_existing` the merges into `into_existing` get their events but not the UPDATE,
    which the caller runs once it holds those leads (`Importer._write_in_lane`).
    Each lead's COPY text was formatted where it was parsed (`_copy_body`): this thread keeps the
    database busy, so it only adds the id, the merge count and the owner.
    """
    now = timezone.now()
    now_iso = now.isoformat()
    merged = 0
    with connection.cursor() as cur:
        events: list[str] = []
        source_json = copy_json(json.dumps(source))
        if creators:
            job_id = str(job.pk) if job else "\\N"
            common = f"\t{job_id}\t%s\t0\t0\t\t{'t' if held else 'f'}\t{now_iso}\t{now_iso}\t"
            waiting = common % "unassigned" + "\\N\t\\N\t\\N\t\\N\t\\N\n"
            assigned = common % "assigned"
            lines: list[str] = []
            for r in creators:
                pk = r.lead_id
                body = r.copy_body or _copy_body(r.data)
                if (owner := owners.get(pk)) is None:
                    lines.append(f"{pk}\t{body}\t{len(r.merges)}{waiting}")
                else:
                    # (id, owner, routed_at, rule, sla_due_at), as batch routing's UPDATE writes them.
                    _, rep_id, routed_at, rule_id, sla_due = owner
                    routed_iso = iso_text(routed_at)
                    lines.append(f"{pk}\t{body}\t{len(r.merges)}{assigned}{rep_id}\t{routed_iso}\t{routed_iso}\t"
                                 f"{copy_value(rule_id)}\t{copy_value(sla_due and iso_text(sla_due))}\n")
                at = r.received_iso or r.data["received_at"].isoformat()  # formatted once, when parsed
                events.append(f'{pk}\treceived\t{at}\t{{"row": {r.row}, "source": {source_json}}}\n')
                for dup in r.merges:
                    events.append(_merge_line(pk, dup, now_iso, source_json))
            with cur.cursor.copy(f"COPY routing_lead ({', '.join(_LEAD_COPY)}) FROM STDIN") as copy:
                copy.write("".join(lines))
            merged += sum(len(r.merges) for r in creators)
        if into_existing:
            # A routed import ends the hold of leads an earlier import held: route_pending takes them.
            if update_existing:
                _merge_into_existing_pg(into_existing, release_held=not held)
            for pk, dups in into_existing.items():
                for dup in dups:
                    events.append(_merge_line(pk, dup, now_iso, source_json))
                merged += len(dups)
        if events:
            with cur.cursor.copy("COPY routing_leadevent (lead_id, kind, at, detail) FROM STDIN") as copy:
                copy.write("".join(events))
    return merged


def _merge_line(lead_id: int, dup: _Row, now_iso: str, source_json: str) -> str:
    email = copy_json(json.dumps(dup.email))
    return f'{lead_id}\tmerged\t{now_iso}\t{{"row": {dup.row}, "email": {email}, "source": {source_json}}}\n'


def lead_receive(
    data: dict[str, Any], *, source: str, actor=None, now: dt.datetime | None = None, token_id: int | None = None
) -> tuple[int, bool]:
    """Create one lead from normalised data (the API path) and route it, or merge it into an open
    duplicate; one transaction, so a lead is never seen unassigned on its way to an owner.

    Returns (the lead's id, merged). A merged duplicate keeps its owner; one still unassigned is routed now
    (a duplicate through a routed channel ends the hold of a lead imported without routing). Called
    inside a transaction (the API's Idempotency-Key record), a routed lead holds the rule cursors
    until that transaction ends.
    """
    now = now or timezone.now()
    detail: dict[str, Any] = {"source": source}
    if token_id:
        detail["token"] = token_id
    if not data.get("source"):
        data = {**data, "source": source}
    with transaction.atomic():
        if data["email"]:
            merged_into = _merge_into_open(data, now=now, actor=actor, detail=detail)
            if merged_into is not None:
                return merged_into, True
        lead = Lead.objects.create(**{name: data[name] for name in FIELDS}, extra=data["extra"])
        services.record_event(lead, LeadEvent.Kind.RECEIVED, at=lead.received_at, actor=actor, **detail)
        router = services.NewLeadRouter(now=now, actor=actor)

        def route() -> None:
            # Every other router waits while this one holds the rule cursors: the lead is written, and
            # what need not wait for them is read, before taking them.
            router.prepare()
            router.lock()
            router.decide([(lead.pk, lead_data(lead, LEAD_FIELDS))])
            router.finish(stored=False)

        _routed_or_kept(route, lead.pk)
    return lead.pk, False


def _oldest_open(email: str, *, lock: bool) -> tuple[int, str] | None:
    """(id, status) of the oldest open lead with this email; `lock` locks every lead with it, in id
    order. Plain SQL: every API POST asks, and most find nothing (the ORM's query cost 0.5 ms of CPU
    to build). The status is checked here, as in `_open_leads_by_email`: given both conditions, a
    planner without statistics scanned every open lead (83 ms at a million leads, 0.02 ms without)."""
    lock_clause = " FOR UPDATE" if lock and connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, status FROM routing_lead WHERE email = %s ORDER BY id{lock_clause}", [email])
        return next(((pk, status) for pk, status in cursor.fetchall() if status in Lead.OPEN_STATUSES), None)


def _merge_into_open(data: dict[str, Any], *, now: dt.datetime, actor, detail: dict[str, Any]) -> int | None:
    """Merge a received lead into the open lead with its email, if there is one: that lead's id, else None.

    A duplicate of a lead nobody has yet is routed now, so the rule cursors are taken before its row is
    locked (routing's lock order, services.routing_locked). A duplicate of a lead with an owner or in a
    pool locks only that person's leads: it must not wait for an import chunk holding the cursors. A lead that
    lost its owner between the look and the lock is left to route_pending."""
    found = _oldest_open(data["email"], lock=False)
    if found is None:
        return None
    routes = found[1] == Lead.Status.UNASSIGNED
    if routes:
        services.routing_locked()
    locked = _oldest_open(data["email"], lock=True)
    if locked is None:
        return None  # closed meanwhile: received as a new lead
    existing = _merge_received(locked[0], data, now=now, actor=actor, detail=detail)
    if routes and existing.status == Lead.Status.UNASSIGNED:
        _routed_or_kept(lambda: services.route_leads([existing.pk], now=now, actor=actor), existing.pk)
    return existing.pk


def _merge_received(pk: int, data: dict[str, Any], *, now: dt.datetime, actor, detail: dict[str, Any]) -> Lead:
    """Merge a received duplicate into the open lead `pk` (locked): blanks filled, a `merged` event."""
    existing = Lead.objects.get(pk=pk)
    fields = {name: getattr(existing, name) for name in FILLABLE}
    fields["extra"] = existing.extra
    filled = _fill_blanks(fields, data)
    for name in filled:
        setattr(existing, name, fields[name])
    existing.extra = fields["extra"]
    existing.merged_count += 1
    # The person came back through a routed channel: a lead held from an import without routing is
    # held no more (see _merge_into_existing_pg).
    existing.routing_held = False
    existing.save(update_fields=[*filled, "extra", "merged_count", "routing_held", "updated_at"])
    services.record_event(existing, LeadEvent.Kind.MERGED, at=now, actor=actor, **detail, email=data["email"])
    return existing


def _routed_or_kept(route: Callable[[], Any], lead_id: int) -> None:
    """Route a received lead in a savepoint. If routing fails, the lead is still kept, unassigned
    (route_pending tries again within a minute): a lead is never lost to a routing error."""
    try:
        with transaction.atomic():
            route()
    except Exception:
        log.exception("lead %s was received but not routed; route_pending will try again", lead_id)
