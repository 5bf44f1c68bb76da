"""An import without routing on PostgreSQL writes with two writers (Importer._write_in_lane): what a
user sees must be what one writer gave — one open lead per email, every row counted once, chunks
stored in file order and, when something fails, the chunks before it kept and nothing after it."""

from __future__ import annotations

import random
import threading

import pytest

from routing import intake
from routing.csvio import open_path
from routing.models import Lead, LeadEvent
from tests.factories import LeadFactory
from tests.routing.test_import_command import write_csv

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def rows_of(n: int) -> list[list[str]]:
    return [[f"u{i}@x.example", "F", str(i), "Co", "DE", "", ""] for i in range(n)]


def run(tmp_path, rows: list[list[str]], **options) -> intake.ImportResult:
    csvfile, stream = open_path(write_csv(tmp_path, rows))
    with stream:
        return intake.Importer(source="t", route=False, **options).run(csvfile)


def winning_after_its_lookup(monkeypatch, leads: set[int], chance: float = 1.0, rng=random) -> None:
    """A rep marks each of `leads` won right after a chunk's lookup found it open (with `chance`)."""
    lookup = intake._open_leads_by_email

    def closing(emails):
        found = lookup(emails)
        for pk in leads & set(found.values()):
            if rng.random() < chance:
                Lead.objects.filter(pk=pk).update(status="won")
        return found

    monkeypatch.setattr(intake, "_open_leads_by_email", closing)


@pytest.mark.parametrize("seed", range(6))
def test_random_repeats_and_closings_leave_one_open_lead_per_email_and_count_every_row(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    old = [LeadFactory(email=f"old{i}@x.example", status="assigned") for i in range(6)]
    winning_after_its_lookup(monkeypatch, {lead.pk for lead in old[:3]}, chance=0.5, rng=rng)
    emails = [f"e{i}@x.example" for i in range(15)] + [f"old{i}@x.example" for i in range(6)]
    rows = [[rng.choice(emails), "F", str(i), "", "DE", "", ""] for i in range(90)]
    progress: list[int] = []

    result = run(tmp_path, rows, chunk_rows=3, on_progress=lambda r, done: progress.append(done))

    open_emails = list(Lead.objects.open().values_list("email", flat=True))
    assert len(open_emails) == len(set(open_emails))
    assert result.rows == result.created + result.merged == 90
    assert result.created == Lead.objects.exclude(pk__in=[lead.pk for lead in old]).count()
    assert LeadEvent.objects.filter(kind="merged").count() == result.merged
    assert progress == list(range(3, 91, 3))


def test_a_chunk_that_fails_while_written_again_stops_the_other_writer(tmp_path, monkeypatch):
    won = LeadFactory(email="late@x.example", status="assigned")
    winning_after_its_lookup(monkeypatch, {won.pk})

    def failing(self, valid, *args):
        raise RuntimeError("rewrite failed")

    monkeypatch.setattr(intake.Importer, "_write_chunk", failing)
    rows = rows_of(10)
    rows[2] = ["late@x.example", "L", "One", "", "DE", "", ""]  # chunk 1

    with pytest.raises(RuntimeError, match="rewrite failed"):
        run(tmp_path, rows, chunk_rows=2)

    assert sorted(Lead.objects.exclude(pk=won.pk).values_list("email", flat=True)) == ["u0@x.example", "u1@x.example"]


def test_a_later_chunk_failing_first_keeps_the_one_before_it(tmp_path, monkeypatch):
    """Chunk 3 fails while chunk 2 is still being written: chunk 2 is stored, nothing after it."""
    write = intake._write_chunk_pg
    chunk_3_failed = threading.Event()

    def failing(creators, *args, **kwargs):
        if creators and creators[0].row == 8:  # chunk 3
            chunk_3_failed.set()
            raise RuntimeError("chunk 3")
        if creators and creators[0].row == 6:  # chunk 2 goes on after chunk 3 failed
            assert chunk_3_failed.wait(10)
        return write(creators, *args, **kwargs)

    monkeypatch.setattr(intake, "_write_chunk_pg", failing)

    with pytest.raises(RuntimeError, match="chunk 3"):
        run(tmp_path, rows_of(12), chunk_rows=2)

    assert sorted(Lead.objects.values_list("email", flat=True)) == sorted(f"u{i}@x.example" for i in range(6))


def test_a_chunk_of_only_bad_rows_between_good_ones_is_counted(tmp_path):
    rows = rows_of(6)
    rows[2:4] = [["not-an-email", "B", "1", "", "DE", "", ""], ["", "B", "2", "", "DE", "", ""]]

    result = run(tmp_path, rows, chunk_rows=2)

    assert (result.rows, result.created, result.failed) == (6, 4, 2)
    assert Lead.objects.count() == 4
