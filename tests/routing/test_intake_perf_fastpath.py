"""The fast CSV path (column-wise cached cleaning, hand-written COPY text) keeps every behaviour of
the full path: same clean data, the full path's messages for anything it does not recognise, and
values with tabs, backslashes, line breaks or JSON escapes stored exactly as given."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.intake_normalise import LeadCleaner, row_cleaner
from routing.models import Lead, LeadEvent

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
COLUMNS = ["email", "first_name", "phone", "country", "company_size", "score", "priority", "value", "received_at"]

TRICKY = {
    "email": ["a@b.example", " Mixed@Case.Example ", "", "no-at-sign", '"quoted"@x.example', "x@localhost",
              "ünï@x.example", "a" * 250 + "@x.example"],
    "first_name": ["Anna", "  padded  ", "", "x" * 101, "tab\there", "back\\slash"],
    "phone": ["+49 30 1234567", "0049301234567", "030 1234567", "", "12", "(415) 555-0100", "+1" + "9" * 45],
    "country": ["DE", " de ", "Germany", "Österreich", "", "Atlantis", "USA", "XX"],
    "company_size": ["51-200", "5000+", "1,000", "", "many", "-3", "3000000000"],
    "score": ["50", "0", "100", "", "101", "high", "7.0", "7.5"],
    "priority": ["normal", "URGENT", "", "soon"],
    "value": ["1.234,50", "12.5", "", "lots", "1e13", "-4"],
    "received_at": ["2026-11-01T09:00:00Z", "2026-11-01", "", "yesterday", "2099-01-01"],
}


def _fast_and_full(cells: list[str]) -> tuple[dict | None, tuple[dict, list]]:
    cleaner = LeadCleaner(NOW)
    fast = row_cleaner(cleaner, {name: i for i, name in enumerate(COLUMNS)}, [])
    full = LeadCleaner(NOW).clean({**dict(zip(COLUMNS, cells, strict=True)), "extra": {}})
    return fast(cells), full


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({name: st.sampled_from(values) for name, values in TRICKY.items()}))
def test_it_cleans_a_row_exactly_as_the_full_path_or_leaves_it_to_it(row):
    cells = [row[name] for name in COLUMNS]
    fast, (data, errors) = _fast_and_full(cells)
    if errors:
        assert fast is None
    elif fast is not None:
        assert fast == {**data, "extra": {}}


def test_it_recognises_the_common_clean_row():
    fast, (data, errors) = _fast_and_full(
        ["Lead@X.example", "Anna", "+49 30 1234567", "Germany", "51-200", "50", "urgent", "12.50",
         "2026-11-01T09:00:00Z"]
    )
    assert not errors
    assert fast == {**data, "extra": {}}
    assert fast["email"] == "lead@x.example" and fast["country"] == "DE" and fast["company_size"] == 51


def test_a_national_phone_number_becomes_e164_on_the_fast_path():
    fast, (data, _) = _fast_and_full(["a@x.example", "", "030 1234567", "DE", "", "", "", "", ""])
    assert fast is not None and fast["phone"] == data["phone"] == "+49301234567"


def _import(tmp_path: Path, header: list[str], rows: list[list[str]]) -> dict:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([header, *rows])
    path = tmp_path / "odd.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    out = io.StringIO()
    call_command("import_leads", str(path), "--json", "--no-route", stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_values_with_tabs_backslashes_newlines_and_escapes_are_stored_as_given(tmp_path):
    odd = ["tab\there", "back\\slash", "two\nlines", "\\N", "quote \" and ü", "C:\\new\\table"]
    rows = [[f"odd{i}@x.example", text, text, "DE", "12.50"] for i, text in enumerate(odd)]
    summary = _import(tmp_path, ["email", "company", "Notes", "country", "value"], rows)

    assert summary["created"] == len(odd) and summary["failed"] == 0
    for i, text in enumerate(odd):
        lead = Lead.objects.get(email=f"odd{i}@x.example")
        assert lead.company == text.strip()
        assert lead.extra == {"Notes": text.strip()}
        assert lead.value == Decimal("12.50")


@pytest.mark.django_db
def test_a_nul_character_past_the_sniffed_start_does_not_stop_the_import(tmp_path):
    # (A NUL in the first 64 KiB marks the whole file as binary; this one comes later.)
    filler = [[f"f{i}@x.example", "x" * 100] for i in range(700)]
    summary = _import(tmp_path, ["email", "company"],
                      [*filler, ["nul@x.example", "Acme\x00 GmbH"], ["ok@x.example", "Fine"]])

    assert summary["created"] == 702
    assert Lead.objects.get(email="ok@x.example").company == "Fine"


@pytest.mark.django_db
def test_each_created_lead_gets_a_received_event_with_its_row_and_each_duplicate_a_merged_one(tmp_path):
    rows = [["a@x.example", "A"], ["b@x.example", "B"], ["A@X.example", "again"]]
    summary = _import(tmp_path, ["email", "company"], rows)

    a = Lead.objects.get(email="a@x.example")
    assert summary["created"] == 2 and summary["merged"] == 1
    received = LeadEvent.objects.get(lead=a, kind=LeadEvent.Kind.RECEIVED)
    merged = LeadEvent.objects.get(lead=a, kind=LeadEvent.Kind.MERGED)
    assert received.detail == {"source": "odd.csv", "row": 2}
    assert received.at == a.received_at
    assert merged.detail == {"source": "odd.csv", "row": 4, "email": "a@x.example"}
    assert a.merged_count == 1


@pytest.mark.django_db
def test_an_in_file_duplicate_fills_the_blanks_of_the_lead_it_merges_into(tmp_path):
    rows = [["fill@x.example", "", ""], ["FILL@x.example", "Acme", "extra note"]]
    summary = _import(tmp_path, ["email", "company", "Notes"], rows)

    lead = Lead.objects.get(email="fill@x.example")
    assert summary["created"] == 1 and summary["merged"] == 1
    assert lead.company == "Acme"
    assert lead.extra == {"Notes": "extra note"}


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.fixed_dictionaries({name: _TEXT for name in (
        "email", "first_name", "last_name", "phone", "company", "title", "country", "region", "postcode",
        "industry", "product", "source", "priority")}),
    size=st.none() | st.integers(0, 2_000_000_000),
    score=st.none() | st.integers(0, 100),
    value=st.none() | st.decimals(min_value=-10**6, max_value=10**12, places=2, allow_nan=False),
    extra=st.dictionaries(_TEXT, _TEXT, max_size=3),
    microseconds=st.integers(-10**12, 10**12),
    offset=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                            dt.timezone(-dt.timedelta(hours=8))]),
    formatted=st.booleans(),
    wanted=st.sets(st.sampled_from(["country", "region", "company_size", "score", "value", "received_at", "extra",
                                    "priority", "id", "updated_at"])),
)
def test_a_rows_copy_text_reads_back_as_the_same_values(texts, size, score, value, extra, microseconds, offset,
                                                        formatted, wanted):
    """Rows parsed in the forked worker travel as their COPY text; the few a merge needs are read back
    from it, and must come back exactly as they were cleaned (tabs, backslashes, line breaks, JSON).
    Deciding a lead reads back only the fields its rules test."""
    from routing.intake import _copy_body, _decode_body, _decode_fields

    received = (NOW + dt.timedelta(microseconds=microseconds)).astimezone(offset)
    data = {**texts, "company_size": size, "score": score, "value": value, "extra": extra, "received_at": received}

    body = _copy_body(data, received.isoformat() if formatted else None)
    back = _decode_body(body)

    assert back == data
    assert _decode_fields(body, wanted) == {name: data[name] for name in wanted if name in data}
    assert back["received_at"].isoformat() == received.isoformat()  # the same instant, written the same way
