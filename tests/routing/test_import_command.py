"""`import_leads` (CONTRACT §4): the summary, exit codes, and every bad input the issue lists."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from routing.models import Lead, LeadEvent
from tests.factories import LeadFactory, RepFactory

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
HEADER = ["email", "first_name", "last_name", "company", "country", "score", "priority"]

pytestmark = pytest.mark.django_db


def write_csv(tmp_path: Path, rows: list[list[str]], header: list[str] = HEADER, *, name: str = "leads.csv",
              delimiter: str = ",", encoding: str = "utf-8") -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp_path / name
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def run_import(path: Path, *args: str) -> dict:
    out = io.StringIO()
    call_command("import_leads", str(path), "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def assert_adds_up(summary: dict) -> None:
    assert summary["created"] + summary["merged"] + summary["failed"] == summary["rows"]
    failed_rows = {e["row"] for e in summary["errors"]}
    assert len(failed_rows) == summary["failed"]
    for err in summary["errors"]:
        assert set(err) == {"row", "column", "message"} and err["message"]


def another_import_locking(first: int, second: int, *, then: Callable[[], None], held: threading.Event,
                           errors: list[Exception], timeout: str) -> threading.Thread:
    """A thread standing for another import: in one transaction it locks lead `first`, sets `held`,
    calls `then()` and locks lead `second`, giving up after `timeout` (its error goes to `errors`)."""

    def run() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute("SELECT set_config('lock_timeout', %s, true)", [timeout])
                cur.execute("SELECT id FROM routing_lead WHERE id = %s FOR UPDATE", [first])
                held.set()
                then()
                cur.execute("SELECT id FROM routing_lead WHERE id = %s FOR UPDATE", [second])
        except Exception as exc:
            errors.append(exc)
        finally:
            held.set()
            connection.close()

    return threading.Thread(target=run)


def test_it_prints_exactly_the_contract_summary_keys(tmp_path):
    summary = run_import(write_csv(tmp_path, [["a@x.example", "A", "B", "Co", "DE", "10", "normal"]]), "--no-route")

    assert set(summary) == {"rows", "created", "merged", "failed", "assigned", "pooled", "unassigned", "errors"}
    assert summary["rows"] == 1 and summary["created"] == 1


def test_leads_imported_without_routing_are_counted_as_unassigned(tmp_path):
    rows = [[f"n{i}@x.example", "A", "B", "Co", "DE", "10", "normal"] for i in range(3)]
    summary = run_import(write_csv(tmp_path, rows), "--no-route")

    assert (summary["assigned"], summary["pooled"], summary["unassigned"]) == (0, 0, 3)
    assert Lead.objects.filter(status="unassigned").count() == 3


def test_it_creates_119_merges_78_and_rejects_3_in_scenario_9(tmp_path):
    rows = []
    for i in range(80):
        rows.append([f"{'Twin' if i % 2 else 'solo'}@Shared.example", "N", str(i), "Co", "DE", "50", "normal"])
    for i in range(117):
        rows.append([f"unique{i}@leads.example", "U", str(i), "Co", "FR", "20", "normal"])
    rows.insert(10, ["not-an-email", "Bad", "Email", "Co", "DE", "10", "normal"])
    rows.insert(50, ["x@leads.example", "Bad", "Score", "Co", "DE", "high", "normal"])
    rows.insert(150, ["y@leads.example", "Bad", "Country", "Co", "Narnia", "10", "normal"])

    summary = run_import(write_csv(tmp_path, rows), "--no-route")

    assert (summary["rows"], summary["created"], summary["merged"], summary["failed"]) == (200, 119, 78, 3)
    assert sorted((e["row"], e["column"]) for e in summary["errors"]) == [
        (12, "email"), (52, "score"), (152, "country")
    ]
    assert Lead.objects.count() == 119
    assert Lead.objects.get(email="twin@shared.example").merged_count == 39
    assert LeadEvent.objects.filter(kind="merged").count() == 78
    assert LeadEvent.objects.filter(kind="received").count() == 119


def test_it_merges_a_duplicate_into_the_open_lead_which_keeps_its_owner(tmp_path):
    owner = RepFactory()
    lead = LeadFactory(email="known@customer.example", owner=owner, status="assigned", company="")

    summary = run_import(write_csv(tmp_path, [["KNOWN@customer.example", "K", "N", "NewCo", "DE", "", ""]]),
                         "--no-route")

    lead.refresh_from_db()
    assert summary["merged"] == 1 and summary["created"] == 0
    assert lead.owner == owner and lead.status == "assigned"
    assert lead.company == "NewCo"  # blanks are filled from the duplicate
    event = lead.events.get(kind="merged")
    assert event.detail["source"] == "leads.csv" and event.detail["row"] == 2


def test_it_creates_a_new_lead_when_the_earlier_one_is_closed(tmp_path):
    LeadFactory(email="again@customer.example", status="lost")

    summary = run_import(write_csv(tmp_path, [["again@customer.example", "A", "G", "Co", "DE", "", ""]]), "--no-route")

    assert summary["created"] == 1


def test_it_records_the_source_on_the_received_event(tmp_path):
    run_import(write_csv(tmp_path, [["src@x.example", "S", "R", "Co", "DE", "", ""]]), "--no-route", "--source", "fair")

    event = LeadEvent.objects.get(kind="received")
    assert event.detail == {"source": "fair", "row": 2}
    assert event.lead.source == "fair"


def test_a_dry_run_reports_but_writes_nothing(tmp_path):
    rows = [["d@x.example", "D", "R", "Co", "DE", "", ""], ["D@x.example", "D", "R", "Co", "DE", "", ""],
            ["bad", "D", "R", "Co", "DE", "", ""]]

    summary = run_import(write_csv(tmp_path, rows), "--dry-run")

    assert (summary["created"], summary["merged"], summary["failed"]) == (1, 1, 1)
    assert Lead.objects.count() == 0 and LeadEvent.objects.count() == 0


def test_it_routes_new_leads_unless_told_not_to(tmp_path):
    summary = run_import(write_csv(tmp_path, [["r@x.example", "R", "O", "Co", "DE", "", ""]]))

    assert summary["assigned"] + summary["pooled"] + summary["unassigned"] == 1


def test_an_empty_file_exits_with_code_2(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")

    with pytest.raises(CommandError) as exc:
        run_import(path)

    assert exc.value.returncode == 2 and "empty" in str(exc.value)


def test_binary_garbage_exits_with_code_2(tmp_path):
    path = tmp_path / "photo.csv"
    path.write_bytes(bytes(range(256)) * 40)

    with pytest.raises(CommandError) as exc:
        run_import(path)

    assert exc.value.returncode == 2


def test_a_missing_file_exits_with_code_2(tmp_path):
    with pytest.raises(CommandError) as exc:
        run_import(tmp_path / "nope.csv")

    assert exc.value.returncode == 2


def test_a_header_only_file_imports_nothing_and_exits_0(tmp_path):
    summary = run_import(write_csv(tmp_path, []))

    assert summary["rows"] == 0 and summary["errors"] == []


def test_rows_with_more_or_fewer_cells_than_the_header_are_rejected_with_their_row(tmp_path):
    rows = [["ok@x.example", "O", "K", "Co", "DE", "", ""], ["long@x.example", "L", "O", "Co", "DE", "", "", "surplus"],
            ["short@x.example", "S", "H"]]

    summary = run_import(write_csv(tmp_path, rows), "--no-route")

    assert summary["created"] == 1 and summary["failed"] == 2
    assert {(e["row"], e["column"]) for e in summary["errors"]} == {(3, "column 8"), (4, "company")}
    assert_adds_up(summary)


def test_invalid_emails_are_rejected_with_the_reason(tmp_path):
    summary = run_import(write_csv(tmp_path, [["jane@@example", "J", "D", "Co", "DE", "", ""]]), "--no-route")

    assert summary["errors"] == [{"row": 2, "column": "email", "message": "invalid email address 'jane@@example'"}]


def test_a_word_as_score_is_rejected(tmp_path):
    summary = run_import(write_csv(tmp_path, [["s@x.example", "S", "C", "Co", "DE", "high", ""]]), "--no-route")

    assert summary["failed"] == 1 and summary["errors"][0]["column"] == "score"


def test_an_unknown_country_is_rejected(tmp_path):
    summary = run_import(write_csv(tmp_path, [["c@x.example", "C", "N", "Co", "Atlantis", "", ""]]), "--no-route")

    assert summary["errors"][0]["column"] == "country" and "Atlantis" in summary["errors"][0]["message"]


def test_an_unknown_priority_is_rejected(tmp_path):
    summary = run_import(write_csv(tmp_path, [["p@x.example", "P", "R", "Co", "DE", "", "asap"]]), "--no-route")

    assert summary["errors"][0]["column"] == "priority"


def test_a_received_date_in_the_future_is_rejected(tmp_path):
    path = write_csv(tmp_path, [["f@x.example", "2999-01-01T00:00:00Z"]], header=["email", "received_at"])

    summary = run_import(path, "--no-route")

    assert summary["errors"][0]["column"] == "received_at" and "future" in summary["errors"][0]["message"]


def test_a_row_without_email_or_phone_names_both_columns(tmp_path):
    path = write_csv(tmp_path, [["", "", "Nobody"]], header=["Email", "Phone", "Company"])

    summary = run_import(path, "--no-route")

    assert summary["errors"] == [{"row": 2, "column": "Email / Phone", "message": "email or phone is required"}]


def test_formula_looking_cells_are_stored_as_plain_text(tmp_path):
    rows = [["f1@x.example", "=HYPERLINK(\"http://evil\",\"x\")", "+cmd", "@SUM(A1:A2)", "DE", "", ""]]

    run_import(write_csv(tmp_path, rows), "--no-route")

    lead = Lead.objects.get()
    assert (lead.first_name, lead.last_name, lead.company) == ('=HYPERLINK("http://evil","x")', "+cmd", "@SUM(A1:A2)")


def test_duplicate_rows_in_one_file_become_one_lead(tmp_path):
    row = ["dup@x.example", "D", "U", "Co", "DE", "", ""]

    summary = run_import(write_csv(tmp_path, [row, row, row]), "--no-route")

    assert (summary["created"], summary["merged"]) == (1, 2)
    assert Lead.objects.get().merged_count == 2


def test_a_file_that_is_half_latin_1_keeps_every_accent(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        "email,first_name,company\r\nzoe@x.example,Zoë,Café Ünd Co\r\n".encode()
        + "rene@x.example,René,Brötchen AG\r\n".encode("latin-1")
    )

    summary = run_import(path, "--no-route")

    assert summary["created"] == 2
    assert set(Lead.objects.values_list("first_name", flat=True)) == {"Zoë", "René"}
    assert Lead.objects.get(email="rene@x.example").company == "Brötchen AG"


def test_a_cp1252_semicolon_file_with_bom_less_excel_headers_is_read(tmp_path):
    path = write_csv(tmp_path, [["mueller@x.example", "Jürgen", "Müller – Söhne", "Österreich"]],
                     header=["E-Mail Address", "First Name", "Company Name", "Country"], delimiter=";",
                     encoding="cp1252")

    summary = run_import(path, "--no-route")

    lead = Lead.objects.get()
    assert summary["created"] == 1
    assert (lead.first_name, lead.company, lead.country) == ("Jürgen", "Müller – Söhne", "AT")


def test_a_utf8_bom_tab_separated_file_with_embedded_newlines_is_read(tmp_path):
    path = tmp_path / "tabs.tsv"
    path.write_bytes(
        "\ufeffEmail\tCompany\tNotes\r\n"
        'nl@x.example\t"Line One\nLine Two"\tok\r\n'
        "nl2@x.example\tSecond\tfine\r\n".encode()
    )

    summary = run_import(path, "--no-route")

    assert summary["created"] == 2
    assert Lead.objects.get(email="nl@x.example").company == "Line One\nLine Two"
    assert Lead.objects.get(email="nl2@x.example").extra == {"Notes": "fine"}


def test_a_multi_line_record_counts_as_one_spreadsheet_row(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b'email,company\r\na@x.example,"two\nlines"\r\nbad-email,Co\r\n')

    summary = run_import(path, "--no-route")

    assert summary["errors"][0]["row"] == 3


def test_unknown_columns_go_to_extra(tmp_path):
    path = write_csv(tmp_path, [["e@x.example", "Gold", "yes"]], header=["email", "Tier", "Newsletter"])

    run_import(path, "--no-route")

    assert Lead.objects.get().extra == {"Tier": "Gold", "Newsletter": "yes"}


def test_the_salesforce_example_export_imports(tmp_path):
    summary = run_import(EXAMPLES / "salesforce.csv", "--no-route")

    lead = Lead.objects.get(email="karl.huber@example.at")
    assert summary["created"] == 2
    assert (lead.country, lead.region, lead.postcode, lead.company_size, lead.source) == (
        "AT", "Vienna", "1010", 5000, "Web"
    )
    assert lead.extra["Rating"] == "Warm"


def test_the_hubspot_example_export_imports(tmp_path):
    summary = run_import(EXAMPLES / "hubspot.csv", "--no-route")

    lead = Lead.objects.get(email="sam.lee@example.com")
    assert summary["created"] == 2
    assert (lead.country, lead.company, lead.company_size, lead.phone, lead.score) == (
        "US", "Bay Labs", 51, "+14155550100", 62
    )


def test_our_own_example_normalises_phone_country_and_size(tmp_path):
    run_import(EXAMPLES / "leads.csv", "--no-route")

    lead = Lead.objects.get(email="jose.garcia@example.es")
    assert (lead.country, lead.phone, lead.company_size) == ("ES", "+34912345678", 11)


def test_the_summary_adds_up_on_a_messy_file(tmp_path):
    rows = [["a@x.example", "A", "", "", "DE", "", ""], ["A@X.example", "", "", "", "", "", ""],
            ["b@x.example", "B", "", "", "Mars", "", ""], ["", "", "", "", "", "", ""],
            ["c@x.example", "", "", "", "", "101", ""], ["d@x.example"]]

    summary = run_import(write_csv(tmp_path, rows), "--no-route")

    assert summary["rows"] == 6
    assert_adds_up(summary)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_duplicates_across_chunks_merge_when_the_database_writes_in_parallel(tmp_path):
    from routing.csvio import open_path
    from routing.intake import Importer

    rows = [[f"p{i % 120}@x.example", "P", str(i), "Co", "DE", "", ""] for i in range(300)]
    rows.insert(7, ["broken", "B", "R", "Co", "DE", "", ""])
    csvfile, stream = open_path(write_csv(tmp_path, rows))
    seen: list[int] = []

    with stream:
        result = Importer(source="t", route=False, chunk_rows=50, on_progress=lambda r, done: seen.append(done)).run(
            csvfile
        )

    assert (result.rows, result.created, result.merged, result.failed) == (301, 120, 180, 1)
    assert Lead.objects.count() == 120 and LeadEvent.objects.filter(kind="merged").count() == 180
    assert seen == [50, 100, 150, 200, 250, 300, 301]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_duplicate_in_a_chunk_not_yet_committed_when_looked_up_still_merges(tmp_path, monkeypatch):
    """The main thread looks each chunk up while the writer may still be writing the chunks before it;
    a slow writer makes sure it is, and the duplicates sit in neighbouring chunks."""

    from routing import intake
    from routing.csvio import open_path

    write = intake._write_chunk_pg
    monkeypatch.setattr(intake, "_write_chunk_pg", lambda *a, **kw: (time.sleep(0.2), write(*a, **kw))[1])
    behind: list[int] = []
    complete = intake.Importer._complete_lookup

    def watching(self, valid, committed, existing):
        behind.append(self._committed - committed)  # chunks the lookup could not see
        return complete(self, valid, committed, existing)

    monkeypatch.setattr(intake.Importer, "_complete_lookup", watching)
    # Rows 0-49 new; rows 50-99 repeat them (other case); rows 100-149 repeat them again.
    rows = [[f"{'Q' if i >= 50 else 'q'}{i % 50}@x.example", "Q", str(i), "Co", "DE", "", ""] for i in range(150)]
    csvfile, stream = open_path(write_csv(tmp_path, rows))

    with stream:
        result = intake.Importer(source="t", route=False, chunk_rows=50).run(csvfile)

    assert max(behind) >= 1
    assert (result.created, result.merged) == (50, 100)
    assert Lead.objects.count() == 50
    assert set(Lead.objects.values_list("merged_count", flat=True)) == {2}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lead_closed_between_the_lookup_and_the_write_takes_no_merge(tmp_path, monkeypatch):
    """The lookup found the open lead; a rep marked it won before the writer got there: the row
    becomes a new lead, as it would have if the lead had been won before the import started."""
    from routing import intake
    from routing.csvio import open_path

    won = LeadFactory(email="late@x.example", status="assigned")
    lookup = intake._open_leads_by_email

    def closing_after_lookup(emails):
        found = lookup(emails)
        if won.pk in found.values():  # the lookup's connection autocommits: won from here on
            Lead.objects.filter(pk=won.pk).update(status="won")
        return found

    monkeypatch.setattr(intake, "_open_leads_by_email", closing_after_lookup)
    rows = [[f"f{i}@x.example", "F", str(i), "Co", "DE", "", ""] for i in range(60)] + [
        ["LATE@x.example", "L", "Late", "Co", "DE", "", ""]]
    csvfile, stream = open_path(write_csv(tmp_path, rows))

    with stream:
        result = intake.Importer(source="t", route=False, chunk_rows=50).run(csvfile)

    assert (result.created, result.merged) == (61, 0)
    won.refresh_from_db()
    assert (won.status, won.merged_count) == ("won", 0)
    assert Lead.objects.get(email="late@x.example", status="unassigned").last_name == "Late"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_chunk_written_again_sends_the_next_chunk_back_to_its_new_leads(tmp_path, monkeypatch):
    """Two writers: chunk 1 dedupes against chunk 0's new leads before chunk 0 commits. Here chunk 0
    must be written again (the lead it merged late@ into was won meanwhile), which makes late@ a new
    lead chunk 1 did not know of: chunk 1 is written again too, and its late@ row merges into that
    lead instead of creating a second one."""

    from routing import intake
    from routing.csvio import open_path

    won = LeadFactory(email="late@x.example", status="assigned")
    lookup, still_open, complete = intake._open_leads_by_email, intake._still_open, intake.Importer._complete_lookup
    chunk_1_deduped = threading.Event()
    rewritten: list[int] = []

    def closing_after_lookup(emails):
        found = lookup(emails)
        if won.pk in found.values():  # chunk 0's lookup found it; won before chunk 1's lookup runs
            Lead.objects.filter(pk=won.pk).update(status="won")
        return found

    def completing(self, valid, committed, existing):
        found = complete(self, valid, committed, existing)
        if any(r.row == 5 for r in valid):
            chunk_1_deduped.set()
        return found

    def checking_once_chunk_1_deduped(existing):
        if won.pk in existing.values():
            assert chunk_1_deduped.wait(10)
        return still_open(existing)

    write_chunk = intake.Importer._write_chunk

    def rewriting(self, valid, *args):
        rewritten.append(valid[0].row)
        return write_chunk(self, valid, *args)

    monkeypatch.setattr(intake, "_open_leads_by_email", closing_after_lookup)
    monkeypatch.setattr(intake.Importer, "_complete_lookup", completing)
    monkeypatch.setattr(intake, "_still_open", checking_once_chunk_1_deduped)
    monkeypatch.setattr(intake.Importer, "_write_chunk", rewriting)
    rows = [["late@x.example", "L", "One", "", "DE", "", ""], ["new@x.example", "N", "One", "", "DE", "", ""],
            ["a@x.example", "A", "A", "", "DE", "", ""],
            ["LATE@x.example", "L", "Two", "Late Co", "DE", "", ""], ["c@x.example", "C", "C", "", "DE", "", ""],
            ["b@x.example", "B", "B", "", "DE", "", ""]]
    csvfile, stream = open_path(write_csv(tmp_path, rows))

    with stream:
        result = intake.Importer(source="t", route=False, chunk_rows=3).run(csvfile)

    assert rewritten == [2, 5]  # both chunks, each once, in order
    assert (result.rows, result.created, result.merged) == (6, 5, 1)
    late = Lead.objects.get(email="late@x.example", status="unassigned")
    assert (late.last_name, late.company, late.merged_count) == ("One", "Late Co", 1)
    won.refresh_from_db()
    assert (won.status, won.merged_count) == ("won", 0)
    assert list(LeadEvent.objects.filter(kind="merged").values_list("lead", flat=True)) == [late.pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_chunk_written_again_sends_back_only_chunks_that_relied_on_what_changed(tmp_path, monkeypatch):
    """A lead chunk 1 merges into is won during the import: chunk 1 is written again alone. The chunks
    after it share no email with it, so they keep their first write (a rewrite used to send every
    later chunk back as well, each one alone, undoing the two writers for the rest of the file)."""
    from routing import intake
    from routing.csvio import open_path

    won = LeadFactory(email="late@x.example", status="assigned")
    lookup, write_chunk = intake._open_leads_by_email, intake.Importer._write_chunk
    rewritten: list[int] = []

    def closing_after_lookup(emails):
        found = lookup(emails)
        if won.pk in found.values():
            Lead.objects.filter(pk=won.pk).update(status="won")
        return found

    def rewriting(self, valid, *args):
        rewritten.append(valid[0].row)
        return write_chunk(self, valid, *args)

    monkeypatch.setattr(intake, "_open_leads_by_email", closing_after_lookup)
    monkeypatch.setattr(intake.Importer, "_write_chunk", rewriting)
    rows = [[f"f{i}@x.example", "F", str(i), "Co", "DE", "", ""] for i in range(40)]
    rows[2] = ["late@x.example", "L", "Late", "", "DE", "", ""]  # chunk 1 (rows 4-5 of the file)
    csvfile, stream = open_path(write_csv(tmp_path, rows))

    with stream:
        result = intake.Importer(source="t", route=False, chunk_rows=2).run(csvfile)

    assert rewritten == [4]
    assert (result.created, result.merged) == (40, 0)
    assert Lead.objects.filter(status="unassigned").count() == 40


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_when_one_writer_fails_the_other_stops_and_the_chunks_before_stay(tmp_path, monkeypatch):
    """Two writers: chunk 2 fails while chunk 3 is being written beside it. The import raises that
    error; chunks 0 and 1 stay, nothing of chunks 2 and 3 does."""
    from routing import intake
    from routing.csvio import open_path

    write = intake._write_chunk_pg

    def failing_on_chunk_2(creators, *args, **kwargs):
        if creators and creators[0].row == 6:
            raise RuntimeError("disk full")
        return write(creators, *args, **kwargs)

    monkeypatch.setattr(intake, "_write_chunk_pg", failing_on_chunk_2)
    rows = [[f"f{i}@x.example", "F", str(i), "Co", "DE", "", ""] for i in range(10)]
    csvfile, stream = open_path(write_csv(tmp_path, rows))

    with stream, pytest.raises(RuntimeError, match="disk full"):
        intake.Importer(source="t", route=False, chunk_rows=2).run(csvfile)

    assert sorted(Lead.objects.values_list("email", flat=True)) == [f"f{i}@x.example" for i in range(4)]
    assert LeadEvent.objects.count() == 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_imports_merging_into_the_same_leads_at_once_both_finish_and_count_every_row(tmp_path):
    """Two imports at once, each with its two writers, whose files repeat the same 30 open leads in
    different orders: every chunk locks the leads it merges into in id order, and no writer waits for
    another chunk while holding them, so neither import deadlocks and every merge is counted once."""
    import random

    from routing.csvio import open_path
    from routing.intake import Importer

    old = [LeadFactory(email=f"old{i}@x.example", status="assigned") for i in range(30)]
    results: dict[str, object] = {}

    def rows_for(name: str, seed: int) -> list[list[str]]:
        rows = [[f"{name}{i}@x.example", "N", str(i), "Co", "DE", "", ""] for i in range(120)]
        rows += [[f"OLD{i % 30}@x.example", "O", name, "", "DE", "", ""] for i in range(90)]
        random.Random(seed).shuffle(rows)
        return rows

    def run(name: str, seed: int) -> None:
        try:
            csvfile, stream = open_path(write_csv(tmp_path, rows_for(name, seed), name=f"{name}.csv"))
            with stream:
                results[name] = Importer(source=name, route=False, chunk_rows=15).run(csvfile)
        except Exception as exc:
            results[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(name, seed)) for name, seed in (("a", 1), ("b", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    for name in ("a", "b"):
        result = results[name]
        assert not isinstance(result, Exception), result
        assert (result.rows, result.created, result.merged, result.failed) == (210, 120, 90, 0)
    assert sorted(Lead.objects.filter(pk__in=[o.pk for o in old]).values_list("merged_count", flat=True)) == [6] * 30
    assert Lead.objects.count() == 30 + 240
    assert LeadEvent.objects.filter(kind="merged").count() == 180


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_chunk_waiting_for_the_one_before_holds_no_lead_another_writer_needs(tmp_path, monkeypatch):
    """Chunk 0 merges into `low`, chunk 1 into `high`. Another import holds `low` and then wants
    `high`. If chunk 1 locked `high` before waiting for chunk 0 to commit, the three would wait for
    each other for ever (chunk 0 for `low`, the other import for `high`, chunk 1 for chunk 0), a cycle
    PostgreSQL cannot see: chunk 1 must lock only once chunk 0 has committed."""


    from routing import intake
    from routing.csvio import open_path

    low = LeadFactory(email="low@x.example", status="assigned")
    high = LeadFactory(email="high@x.example", status="assigned")
    other_holds_low, chunk_1_waits, errors = threading.Event(), threading.Event(), []
    calls: dict[int, int] = {}
    wait, still_open = intake.Importer._await, intake._still_open

    def until_chunk_1_waits() -> None:
        assert chunk_1_waits.wait(10)
        time.sleep(0.1)  # chunk 1 is inside its wait for chunk 0 now

    other = another_import_locking(low.pk, high.pk, then=until_chunk_1_waits, held=other_holds_low, errors=errors,
                                   timeout="2s")

    def watching(self, index, ready):
        calls[index] = calls.get(index, 0) + 1
        if index == 1 and calls[index] == 2:  # chunk 1 waits for chunk 0 to commit
            chunk_1_waits.set()
        return wait(self, index, ready)

    def once_the_other_holds_low(existing):
        if low.pk in existing.values() and not other.is_alive():
            other.start()
            assert other_holds_low.wait(10)
        return still_open(existing)

    monkeypatch.setattr(intake.Importer, "_await", watching)
    monkeypatch.setattr(intake, "_still_open", once_the_other_holds_low)
    rows = [["LOW@x.example", "L", "Low", "", "DE", "", ""], ["HIGH@x.example", "H", "High", "", "DE", "", ""]]
    csvfile, stream = open_path(write_csv(tmp_path, rows))

    with stream:
        result = intake.Importer(source="t", route=False, chunk_rows=1).run(csvfile)
    other.join(10)

    assert errors == []
    assert (result.created, result.merged) == (0, 2)
    assert sorted(Lead.objects.values_list("merged_count", flat=True)) == [1, 1]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lead_the_writer_will_merge_into_cannot_be_closed_until_the_chunk_commits(tmp_path, monkeypatch):
    """Between the writer's re-check that a found lead is open and its merge UPDATE, a rep marking the
    lead won must wait: otherwise the duplicate merges into a lead that is already won."""

    from django.db import OperationalError

    from routing import intake
    from routing.csvio import open_path

    lead = LeadFactory(email="late@x.example", status="assigned")
    still_open = intake._still_open
    outcome: list[str] = []

    def then_a_rep_closes_it(existing):
        kept = still_open(existing)
        if lead.pk in kept.values():
            def close() -> None:
                try:
                    with connection.cursor() as cur:  # this thread's own connection
                        cur.execute("SET lock_timeout = '300ms'")
                        cur.execute("UPDATE routing_lead SET status = 'won' WHERE id = %s", [lead.pk])
                    outcome.append("closed")
                except OperationalError:
                    outcome.append("waited")
                finally:
                    connection.close()

            rep = threading.Thread(target=close)
            rep.start()
            rep.join()
        return kept

    monkeypatch.setattr(intake, "_still_open", then_a_rep_closes_it)
    rows = [[f"f{i}@x.example", "F", str(i), "Co", "DE", "", ""] for i in range(60)] + [
        ["LATE@x.example", "L", "Late", "Co", "DE", "", ""]]
    csvfile, stream = open_path(write_csv(tmp_path, rows))

    with stream:
        result = intake.Importer(source="t", route=False, chunk_rows=50).run(csvfile)

    assert outcome == ["waited"]
    assert (result.created, result.merged) == (60, 1)
    lead.refresh_from_db()
    assert (lead.status, lead.merged_count) == ("assigned", 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_re_locking_after_a_closed_lead_cannot_deadlock_with_another_import():
    """The writer found `high` open and `closed` for x@; closed by now, x@'s open lead is `low`. Another
    import holds `low` and wants `high`. Taking `low` while still holding `high` would deadlock: the
    writer must let go of `high` and lock both in id order."""


    from routing import intake

    low = LeadFactory(email="x@x.example", status="assigned")
    closed = LeadFactory(email="x@x.example", status="won")
    high = LeadFactory(email="a@x.example", status="assigned")
    held, errors = threading.Event(), []
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (writer_pid,) = cur.fetchone()

    def until_the_writer_waits_for_low() -> None:  # which this import holds
        with connection.cursor() as cur:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                cur.execute("SELECT pg_backend_pid() = ANY(pg_blocking_pids(%s))", [writer_pid])
                if cur.fetchone()[0]:
                    break
                time.sleep(0.01)

    other = another_import_locking(low.pk, high.pk, then=until_the_writer_waits_for_low, held=held, errors=errors,
                                   timeout="5s")
    other.start()
    held.wait(5)
    try:
        with transaction.atomic():
            kept = intake._still_open({"x@x.example": closed.pk, "a@x.example": high.pk})
    finally:
        other.join()

    assert errors == []
    assert kept == {"x@x.example": low.pk, "a@x.example": high.pk}


@pytest.mark.postgres
def test_a_merging_import_inside_a_transaction_leaves_the_planner_as_it_found_it(tmp_path):
    """Inside the caller's transaction each chunk is a savepoint, and releasing one keeps SET LOCAL:
    routing and the caller's later queries must not run with hash joins turned off."""

    LeadFactory(email="old@x.example", status="assigned")

    summary = run_import(write_csv(tmp_path, [["OLD@x.example", "O", "Old", "Co", "DE", "", ""]]), "--no-route")

    with connection.cursor() as cur:
        cur.execute("SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')")
        settings = cur.fetchone()
    assert summary["merged"] == 1 and connection.in_atomic_block
    assert settings == ("on", "on")


def test_an_excel_unicode_text_export_in_utf16_is_read(tmp_path):
    path = tmp_path / "excel.txt"
    path.write_bytes("Email\tFirst Name\tCountry\r\nu16@x.example\tŁukasz\tPolska\r\n".encode("utf-16"))

    summary = run_import(path, "--no-route")

    lead = Lead.objects.get()
    assert summary["created"] == 1 and (lead.first_name, lead.country) == ("Łukasz", "PL")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rows_parsed_in_the_worker_merge_with_every_value_intact(tmp_path, forks):
    """On PostgreSQL the rows are parsed in a forked worker and travel as COPY text; a merge reads
    a row's values back from it. Blanks filled from in-file and stored duplicates keep tabs,
    backslashes, line breaks and extra columns exactly."""
    from routing.csvio import open_path
    from routing.intake import Importer

    stored = LeadFactory(email="old@x.example", status="assigned", title="", company="Old Co")
    header = ["email", "first_name", "title", "company", "country", "notes"]
    rows = [[f"n{i}@x.example", "N", "", "Co", "DE", ""] for i in range(70)]
    rows[3] = ["new@x.example", "", "", "Tab\tand\\slash Co", "DE", ""]
    rows[5] = ["New@x.example", "", "VP\\Ops", "X", "", "a\tnote"]  # same chunk: folded in
    rows[60] = ["NEW@x.example", "Line\nbreak", "CTO", "Other", "FR", "met at fair"]  # next chunk
    rows[61] = ["old@x.example", "", "Head of\tsales \\o/", "", "", "übrig"]
    csvfile, stream = open_path(write_csv(tmp_path, rows, header))

    with stream:
        result = Importer(source="t", route=False, chunk_rows=50).run(csvfile)

    assert forks == [1]
    assert (result.created, result.merged, result.failed) == (67, 3, 0)
    new = Lead.objects.get(email="new@x.example")
    assert (new.first_name, new.title, new.company, new.country) == ("Line\nbreak", "VP\\Ops", "Tab\tand\\slash Co",
                                                                     "DE")
    assert new.extra == {"notes": "a\tnote"} and new.merged_count == 2
    stored.refresh_from_db()
    assert (stored.title, stored.company, stored.merged_count) == ("Head of\tsales \\o/", "Old Co", 1)
    assert stored.extra.get("notes") == "übrig"


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """Counts the import's forks of a parsing worker ([] when it parsed in-process). Threads already
    running when the test starts (the session's live server, idle between browser tests) do not
    keep it from forking here; threads the test starts do, as any other thread does in can_fork."""
    import os

    from routing import intake

    already = set(threading.enumerate())
    counted: list[int] = []
    fork = intake.iterate_in_fork

    def counting(produce):
        counted.append(1)
        return fork(produce)

    def can_fork_but_for_threads_already_there() -> bool:
        return hasattr(os, "fork") and all(t in already for t in threading.enumerate())

    monkeypatch.setattr(intake, "iterate_in_fork", counting)
    monkeypatch.setattr(intake, "can_fork", can_fork_but_for_threads_already_there)
    return counted


def failing_rows(n: int) -> list[list[str]]:
    """n rows, a few of them bad in each stretch of 50 (bad email, score, country, too few cells)."""
    rows = [[f"r{i}@x.example", "R", str(i), "Co", "DE", "10", "normal"] for i in range(n)]
    for i in range(7, n, 50):
        rows[i][0] = f"broken{i}"
    for i in range(21, n, 50):
        rows[i][5] = "high"
    for i in range(33, n, 100):
        rows[i][4] = "Atlantis"
    for i in range(44, n, 100):
        rows[i] = rows[i][:3]
    return rows


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_worker_reports_each_failed_row_once_in_order_as_parsing_here_does(tmp_path, monkeypatch, forks):
    """Failures found in the worker travel with their chunk: none lost, none repeated, same order."""
    from routing import intake
    from routing.csvio import open_path

    path = write_csv(tmp_path, failing_rows(260))

    def run():
        csvfile, stream = open_path(path)
        with stream:
            return intake.Importer(source="t", route=False, chunk_rows=50).run(csvfile)

    forked = run()
    LeadEvent.objects.all().delete()
    Lead.objects.all().delete()
    with monkeypatch.context() as patch:
        patch.setattr(intake, "can_fork", lambda: False)
        here = run()

    assert forks == [1]
    rows = [e["row"] for e in forked.errors]
    assert rows == sorted(set(rows)) and len(rows) == forked.failed == 6 + 5 + 3 + 3
    assert forked.errors == here.errors
    assert (forked.rows, forked.created, forked.merged, forked.failed) == (here.rows, here.created, here.merged,
                                                                           here.failed)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_when_the_system_cannot_fork_the_import_parses_in_process_and_loses_nothing(tmp_path, monkeypatch, forks):
    from leadops import forking
    from routing.csvio import open_path
    from routing.intake import Importer

    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(forking.os, "fork", no_fork)
    csvfile, stream = open_path(write_csv(tmp_path, failing_rows(260)))

    with stream:
        result = Importer(source="t", route=False, chunk_rows=50).run(csvfile)

    assert forks == [1]  # it tried
    assert (result.rows, result.created, result.failed, len(result.errors)) == (260, 243, 17, 17)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_import_beside_another_thread_parses_in_process(tmp_path, forks):
    """A threaded web server's request (or a second import) must not fork: the worker could inherit a
    lock another thread holds and wait for it forever."""

    from routing.csvio import open_path
    from routing.intake import Importer

    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        csvfile, stream = open_path(write_csv(tmp_path, failing_rows(120)))
        with stream:
            result = Importer(source="t", route=False, chunk_rows=50).run(csvfile)
    finally:
        release.set()
        other.join()

    assert forks == []
    assert (result.rows, result.created + result.failed) == (120, 120)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failure_while_parsing_in_the_worker_stops_the_import_with_its_message(tmp_path, monkeypatch, forks):
    """The worker's exception is the import's, raised here; the chunks written before it stay whole."""
    from routing.csvio import open_path
    from routing.intake import Importer

    parse = Importer._parse

    def breaking(self, csvfile, plan, row, cells):
        if row == 80:
            raise RuntimeError("the parser broke on row 80")
        return parse(self, csvfile, plan, row, cells)

    monkeypatch.setattr(Importer, "_parse", breaking)
    csvfile, stream = open_path(write_csv(tmp_path, [[f"b{i}@x.example", "B", str(i), "Co", "DE", "", ""]
                                                     for i in range(200)]))

    with stream, pytest.raises(RuntimeError, match="the parser broke on row 80"):
        Importer(source="t", route=False, chunk_rows=50).run(csvfile)

    assert forks == [1]
    # Rows 2-51 were the first chunk, written before the worker reached row 80; nothing after it was.
    assert Lead.objects.count() == LeadEvent.objects.count() == 50


def publish_round_robin(names: list[str]) -> None:
    from routing.services import ruleset_create_draft, ruleset_publish

    for name in names:
        RepFactory(user__username=name)
    ruleset_publish(ruleset_create_draft({"name": "Import", "rules": [
        {"name": "Everyone", "candidates": {"reps": names}, "strategy": "round_robin"}]}))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_each_chunk_commits_with_its_leads_already_routed(tmp_path, forks, notices_queued):
    """A chunk's new leads are decided before they are written and stored with their owners: no lead
    of a running import ever sits unassigned (for route_pending or a manager to see), progress counts
    them as assigned chunk by chunk, and round robin goes in turn in file order across chunks."""
    from routing import intake
    from routing.csvio import open_path

    publish_round_robin(["ann", "bob", "cyd"])
    seen: list[tuple[int, int, int]] = []

    def progress(result, done):  # the writer thread, after each chunk's commit
        stored = Lead.objects.all()
        seen.append((result.assigned, stored.filter(status="assigned").count(),
                     stored.exclude(status="assigned").count()))

    csvfile, stream = open_path(write_csv(tmp_path, failing_rows(200)))
    with stream:
        result = intake.Importer(source="t", chunk_rows=50, on_progress=progress).run(csvfile)

    assert forks == [1]
    assert (result.rows, result.created, result.failed, result.assigned) == (200, 188, 12, 188)
    assert len(seen) == 4 and all(counted == stored and waiting == 0 for counted, stored, waiting in seen)
    assert [counted for counted, _, _ in seen] == sorted({counted for counted, _, _ in seen})  # grows every chunk
    in_file_order = list(Lead.objects.order_by("id").values_list("owner__user__username", flat=True))
    assert in_file_order == [["ann", "bob", "cyd"][i % 3] for i in range(188)]
    assert LeadEvent.objects.filter(kind="routed").count() == 188
    lead = Lead.objects.order_by("id").first()
    assert lead.assigned_at == lead.routed_at and lead.rule.name == "Everyone"


@pytest.fixture
def notices_queued(settings) -> None:
    """The new owners' notifications go to the task queue, as in production, instead of being
    delivered inline one by one (which tests of notifications do): these tests are about routing."""
    settings.TESTING = False


@pytest.fixture
def decided_by_writer(monkeypatch) -> list[int]:
    """The sizes of the chunks the import's writer decided itself, under the locks (not from a plan
    the main thread made ahead)."""
    from routing import services

    sizes: list[int] = []
    decide = services.NewLeadRouter.decide

    def counted(self, leads):
        if leads:
            sizes.append(len(leads))
        return decide(self, leads)

    monkeypatch.setattr(services.NewLeadRouter, "decide", counted)
    return sizes


def import_in_chunks(tmp_path, name: str, rows: list[list[str]], on_progress=None):
    from routing import intake
    from routing.csvio import open_path

    csvfile, stream = open_path(write_csv(tmp_path, rows, name=name))
    with stream:
        return intake.Importer(source="t", chunk_rows=20, on_progress=on_progress).run(csvfile)


def turns_taken() -> list[str]:
    return list(LeadEvent.objects.filter(kind="routed").order_by("id").values_list("rep__user__username", flat=True))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_chunks_decided_ahead_are_used_only_while_nobody_else_routes(
    tmp_path, forks, decided_by_writer, notices_queued
):
    """The main thread decides each chunk while the writer writes the one before. Alone, the writer
    uses those decisions as they are. A lead routed by the API between two chunks moves the round
    robin: the plan made before it no longer holds, so the writer decides under the locks until the
    main thread has started again from the database — and the turn order stays exact across the
    import's leads and the API's."""
    from routing import intake

    publish_round_robin(["ann", "bob", "cyd"])
    result = import_in_chunks(tmp_path, "alone.csv", [[f"a{i}@x.example", "A", str(i), "Co", "DE", "", ""]
                                                      for i in range(80)])
    assert result.assigned == 80 and decided_by_writer == []

    def api_lead_after_first_chunk(result, done):
        if done == 20:
            intake.lead_receive(_api_data("api@x.example"), source="api")  # routed as it is created

    result = import_in_chunks(tmp_path, "busy.csv", [[f"b{i}@x.example", "B", str(i), "Co", "DE", "", ""]
                                                     for i in range(160)], api_lead_after_first_chunk)

    assert result.assigned == 160
    # The chunk after the API's lead, and at most two more planned before the main thread heard of it;
    # the rest were planned ahead again.
    assert 20 <= sum(decided_by_writer) <= 60
    assert forks == [1, 1]
    assert turns_taken() == [["ann", "bob", "cyd"][i % 3] for i in range(241)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_plans_made_ahead_see_duplicates_in_flight_and_the_values_they_fill_in(
    tmp_path, forks, decided_by_writer, notices_queued
):
    """Predicting a chunk's new leads while earlier chunks are still being written: a row repeating a
    lead of a chunk in flight is a merge, not a new lead, and a repeat within the chunk fills in a
    blank country before the lead is routed by it."""
    from routing.services import ruleset_create_draft, ruleset_publish

    for name in ("ann", "bob"):
        RepFactory(user__username=name)
    ruleset_publish(ruleset_create_draft({"name": "By country", "rules": [
        {"name": "Germany", "when": [{"field": "country", "op": "eq", "value": "DE"}],
         "candidates": {"reps": ["ann"]}, "strategy": "round_robin"}],
        "fallback": {"candidates": {"reps": ["bob"]}, "strategy": "round_robin"}}))
    rows = [[f"p{i}@x.example", "P", str(i), "Co", "FR", "", ""] for i in range(80)]
    rows[5] = ["blank@x.example", "B", "L", "Co", "", "", ""]
    rows[12] = ["BLANK@x.example", "B", "L", "Co", "DE", "", ""]  # same chunk: fills the country in
    for i in (25, 45, 65):  # chunks 2-4 repeat leads of the chunks just before them
        rows[i] = [f"P{i - 15}@x.example", "P", "again", "Co", "FR", "", ""]

    result = import_in_chunks(tmp_path, "dups.csv", rows)

    assert (result.created, result.merged, result.assigned) == (76, 4, 76)
    assert decided_by_writer == [] and forks == [1]
    blank = Lead.objects.select_related("owner__user").get(email="blank@x.example")
    assert (blank.country, blank.owner.user.username, blank.merged_count) == ("DE", "ann", 1)
    assert Lead.objects.filter(email="p10@x.example", merged_count=1).exists()
    assert Lead.objects.exclude(email="blank@x.example").filter(owner__user__username="bob").count() == 75


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lead_closed_while_its_duplicate_is_on_the_way_gets_a_new_lead_routed_in_turn(
    tmp_path, forks, decided_by_writer, notices_queued
):
    """The main thread looked the third chunk up while the lead its row repeats was still open, and
    planned a merge. By the time the writer takes the chunk the lead is won: the row makes a new lead,
    the plan does not fit, and the writer decides the chunk itself — in turn with the rest."""
    publish_round_robin(["ann", "bob", "cyd"])
    won = LeadFactory(email="closing@x.example", status="contacted")
    rows = [[f"c{i}@x.example", "C", str(i), "Co", "DE", "", ""] for i in range(80)]
    rows[50] = ["closing@x.example", "C", "again", "Co", "DE", "", ""]

    def close_after_second_chunk(result, done):
        if done == 40:  # the main thread's lookup of chunk 3 happened before it could put chunk 3
            Lead.objects.filter(pk=won.pk).update(status="won")

    result = import_in_chunks(tmp_path, "closing.csv", rows, close_after_second_chunk)

    assert (result.created, result.merged, result.assigned) == (80, 0, 80)
    assert decided_by_writer[:1] == [20] and sum(decided_by_writer) <= 40
    assert Lead.objects.filter(email="closing@x.example").count() == 2
    won.refresh_from_db()
    assert won.merged_count == 0
    assert turns_taken() == [["ann", "bob", "cyd"][i % 3] for i in range(80)]


def _api_data(email: str) -> dict:
    from routing.csvio import FIELDS

    data = dict.fromkeys(FIELDS, "")
    data.update(email=email, country="DE", company_size=None, score=None, value=None, priority="normal",
                received_at=timezone.now(), extra={})
    return data


def test_an_import_sends_leads_to_pools_and_explains_the_ones_nobody_takes(tmp_path):
    """Every outcome of a decision, made while the chunk is written: assigned, pooled, and left
    unassigned with the reason on the lead's timeline."""
    from routing.services import ruleset_create_draft, ruleset_publish
    from tests.factories import PoolFactory

    RepFactory(user__username="ann")
    PoolFactory(name="smb")
    ruleset_publish(ruleset_create_draft({"name": "Import", "rules": [
        {"name": "SMB", "when": [{"field": "score", "op": "lt", "value": 20}], "pool": "smb"},
        {"name": "Germany", "when": [{"field": "country", "op": "eq", "value": "DE"}],
         "candidates": {"reps": ["ann"]}, "strategy": "round_robin", "sla_minutes": 30}]}))
    rows = [["de@x.example", "D", "E", "Co", "DE", "50", "normal"],
            ["small@x.example", "S", "M", "Co", "DE", "10", "normal"],
            ["fr@x.example", "F", "R", "Co", "FR", "50", "normal"]]

    summary = run_import(write_csv(tmp_path, rows))

    assert (summary["created"], summary["assigned"], summary["pooled"], summary["unassigned"]) == (3, 1, 1, 1)
    by_email = {lead.email: lead for lead in Lead.objects.select_related("owner__user", "pool")}
    assert (by_email["de@x.example"].status, by_email["de@x.example"].owner.user.username) == ("assigned", "ann")
    assert by_email["de@x.example"].sla_due_at > by_email["de@x.example"].assigned_at  # the rule's SLA runs
    assert (by_email["small@x.example"].status, by_email["small@x.example"].pool.name) == ("pooled", "smb")
    assert (by_email["fr@x.example"].status, by_email["fr@x.example"].owner) == ("unassigned", None)
    kinds = {email: list(LeadEvent.objects.filter(lead=lead).order_by("id").values_list("kind", flat=True))
             for email, lead in by_email.items()}
    assert kinds == {"de@x.example": ["received", "routed"], "small@x.example": ["received", "pooled"],
                     "fr@x.example": ["received", "unassigned"]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failing", ["writing", "routing"])
def test_a_chunk_that_fails_leaves_nothing_of_it_and_the_chunks_before_stay_routed(
    tmp_path, monkeypatch, notices_queued, failing
):
    """Writing and routing a chunk are one transaction: when either fails on the third chunk, the import
    stops, none of that chunk's leads is stored (unrouted or half-assigned), and the two chunks
    before it stay, routed."""

    from routing import intake, services
    from routing.csvio import open_path

    if failing == "writing":
        owner, name = intake, "_write_chunk_pg" if connection.vendor == "postgresql" else "_insert_leads_orm"
    else:
        owner, name = services, "_apply_plan"
    real = getattr(owner, name)
    calls: list[int] = []

    def third_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError(f"{failing} failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, third_fails)
    publish_round_robin(["ann", "bob"])
    csvfile, stream = open_path(write_csv(tmp_path, [[f"c{i}@x.example", "C", str(i), "Co", "DE", "", ""]
                                                     for i in range(200)]))

    with stream, pytest.raises(RuntimeError, match=f"{failing} failed"):
        intake.Importer(source="t", chunk_rows=50).run(csvfile)

    assert Lead.objects.count() == 100
    assert set(Lead.objects.values_list("status", flat=True)) == {"assigned"}
    assert LeadEvent.objects.filter(kind="routed").count() == 100
    assert not LeadEvent.objects.exclude(lead__in=Lead.objects.all()).exists()


def test_leads_imported_without_routing_wait_for_a_manager_not_for_route_pending(tmp_path):
    """"Do not route" holds the new leads: the every-minute route_pending leaves them unassigned,
    while a lead that is merely waiting for a free rep is still routed."""
    publish_round_robin(["ann", "bob"])
    summary = run_import(write_csv(tmp_path, [["held1@x.example", "H", "One", "Co", "DE", "", ""],
                                              ["held2@x.example", "H", "Two", "Co", "FR", "", ""]]), "--no-route")
    waiting = LeadFactory(email="waiting@x.example")  # e.g. from the API while nobody was free
    assert summary["created"] == 2 and summary["unassigned"] == 2

    call_command("route_pending", stdout=io.StringIO())

    held = Lead.objects.filter(email__startswith="held")
    assert {(lead.status, lead.routing_held) for lead in held} == {("unassigned", True)}
    assert not LeadEvent.objects.filter(lead__in=held).exclude(kind="received").exists()
    waiting.refresh_from_db()
    assert waiting.status == "assigned" and not waiting.routing_held


def test_leads_imported_with_routing_are_not_held(tmp_path):
    summary = run_import(write_csv(tmp_path, [["free@x.example", "F", "R", "Co", "DE", "", ""]]))
    assert summary["unassigned"] == 1  # no rule set yet
    assert Lead.objects.get(email="free@x.example").routing_held is False


def test_a_routed_import_duplicating_a_held_lead_ends_its_hold(tmp_path):
    """The person came back through a routed channel: the held lead goes to route_pending."""
    publish_round_robin(["ann"])
    run_import(write_csv(tmp_path, [["again@x.example", "A", "G", "Co", "DE", "", ""]], name="held.csv"), "--no-route")
    other = LeadFactory(email="other@x.example", routing_held=True)

    summary = run_import(write_csv(tmp_path, [["Again@x.example", "A", "G", "Co", "DE", "", ""]], name="fair.csv"))
    call_command("route_pending", stdout=io.StringIO())

    assert summary["merged"] == 1
    lead = Lead.objects.get(email="again@x.example")
    assert (lead.status, lead.routing_held, lead.merged_count) == ("assigned", False, 1)
    other.refresh_from_db()
    assert other.routing_held and other.status == "unassigned"  # not touched by this import


def test_an_unrouted_import_duplicating_a_held_lead_keeps_it_held(tmp_path):
    run_import(write_csv(tmp_path, [["again@x.example", "A", "G", "Co", "DE", "", ""]], name="a.csv"), "--no-route")
    run_import(write_csv(tmp_path, [["again@x.example", "A", "G", "Co", "DE", "", ""]], name="b.csv"), "--no-route")

    assert Lead.objects.get(email="again@x.example").routing_held
