"""Normalising one lead's values: the cleaning rules the CSV import and the API share."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from routing.intake_normalise import normalise_country, normalise_lead

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def clean(**values):
    return normalise_lead(values, now=NOW)


@pytest.mark.parametrize(("raw", "code"), [
    ("de", "DE"), ("Germany", "DE"), ("Deutschland", "DE"), ("Allemagne", "DE"), ("USA", "US"),
    ("United States of America", "US"), ("UK", "GB"), ("Österreich", "AT"), ("côte d'ivoire", "CI"),
])
def test_it_turns_country_names_and_codes_into_iso_alpha_2(raw, code):
    assert normalise_country(raw) == code


@pytest.mark.parametrize("raw", ["Narnia", "XX", "Mars"])
def test_it_knows_an_unknown_country(raw):
    assert normalise_country(raw) is None


@pytest.mark.parametrize(("raw", "country", "e164"), [
    ("+49 (30) 123-4567", "", "+49301234567"), ("0049 30 1234567", "", "+49301234567"),
    ("030 1234567", "DE", "+49301234567"), ("(415) 555-0100", "US", "+14155550100"),
])
def test_it_writes_phone_numbers_in_e164(raw, country, e164):
    assert clean(phone=raw, country=country)[0]["phone"] == e164


def test_a_phone_it_cannot_understand_is_kept_as_given():
    assert clean(phone="ask reception", email="a@b.example")[0]["phone"] == "ask reception"


@pytest.mark.parametrize(("raw", "size"), [("51-200", 51), ("1,001-5,000", 1001), ("10,000+", 10000), ("250", 250),
                                           (40, 40)])
def test_it_reads_company_size_ranges_as_their_lower_bound(raw, size):
    assert clean(email="a@b.example", company_size=raw)[0]["company_size"] == size


def test_it_lower_cases_and_trims_emails():
    assert clean(email="  Jane.Doe@Example.COM ")[0]["email"] == "jane.doe@example.com"


def test_it_accepts_unusual_but_valid_emails_through_the_full_validator():
    assert clean(email="o'brien+leads@mail.example.co.uk")[1] == []


@pytest.mark.parametrize("score", ["high", "101", "-1", "12.5", True])
def test_a_score_outside_0_to_100_is_an_error(score):
    assert [f for f, _ in clean(email="a@b.example", score=score)[1]] == ["score"]


def test_amounts_with_thousands_separators_are_read():
    assert clean(email="a@b.example", value="€1.234,50")[0]["value"] == Decimal("1234.50")
    assert clean(email="a@b.example", value="1,234.50")[0]["value"] == Decimal("1234.50")


def test_a_naive_received_at_is_taken_in_the_default_time_zone():
    assert clean(email="a@b.example", received_at="2026-11-01 09:30")[0]["received_at"] == dt.datetime(
        2026, 11, 1, 9, 30, tzinfo=dt.UTC
    )


def test_received_at_a_minute_ahead_is_clock_skew_not_the_future():
    assert clean(email="a@b.example", received_at="2026-11-23T12:01:00Z")[1] == []


def test_text_longer_than_its_field_is_an_error():
    assert clean(email="a@b.example", postcode="1" * 21)[1] == [("postcode", "longer than 20 characters")]
