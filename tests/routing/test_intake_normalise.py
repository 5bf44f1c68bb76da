"""Normalising one lead's values: the cleaning rules the CSV import and the API share."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from routing.intake_normalise import _national_prefix, normalise_country, normalise_lead, normalise_phone

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


def _reference_normalise_phone(value: str, country: str = "") -> str:
    """normalise_phone before its national-prefix fast path: what the fast path must agree with."""
    text = value.strip()
    compact = re.sub(r"[\s\-().\u00a0/]", "", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if re.fullmatch(r"\+[1-9]\d{6,14}", compact):
        return compact
    try:
        number = phonenumbers.parse(text, country or None)
    except phonenumbers.NumberParseException:
        return text
    if phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return text


ALL_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
FAST_REGIONS = [region for region in ALL_REGIONS if _national_prefix(region) is not None]
# Spaces, dashes and brackets as people type them, plus the separators on the fast path's edge: the
# ones phonenumbers takes (. / no-break space) and ones it refuses (tab, ideographic space, "x").
phone_like = st.builds(
    "{}{}{}{}".format,
    st.sampled_from([" ", ""]),
    st.sampled_from(["", "0", "00", "+"]),
    st.text(alphabet="0123456789" * 3 + " -() -./\u00a0\t\u3000x", max_size=20),
    st.sampled_from(["", " "]),
)


@st.composite
def national_numbers(draw) -> str:
    digits = draw(st.text(alphabet="0123456789", min_size=5, max_size=13))
    separator = draw(st.sampled_from(["", " ", "-", " / ", ".", "\u00a0", "\t"]))
    cuts = sorted(draw(st.sets(st.integers(1, len(digits) - 1), max_size=3)))
    groups = [digits[i:j] for i, j in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    area = draw(st.sampled_from(["0{}", "(0){}", "(0{})"])).format(groups[0])
    return separator.join([area, *groups[1:]])


@settings(max_examples=3000, deadline=None)
@given(value=phone_like, country=st.sampled_from([*ALL_REGIONS, ""]))
def test_a_phone_is_normalised_exactly_as_phonenumbers_would(value, country):
    assert normalise_phone(value, country) == _reference_normalise_phone(value, country)


@settings(max_examples=3000, deadline=None)
@given(value=national_numbers(), country=st.sampled_from(FAST_REGIONS))
# Rare by chance, so pinned: "0" followed by an international prefix ("01" Israel and Uruguay,
# "019" Taiwan, "0161" New Zealand), which phonenumbers reads as a call abroad.
@example(value="013 4528 2216", country="IL")
@example(value="0131 3039 216721", country="UY")
@example(value="019 12001", country="TW")
@example(value="0161 621 8893", country="NZ")
def test_a_national_number_on_the_fast_path_is_normalised_exactly_as_phonenumbers_would(value, country):
    assert normalise_phone(value, country) == _reference_normalise_phone(value, country)


@pytest.mark.parametrize(("raw", "country", "expected"), [
    ("030 1234567", "DE", "+49301234567"), ("01 23 45 67 89", "FR", "+33123456789"),
    ("020 7946 0018", "GB", "+442079460018"),
    ("0 12", "FR", "0 12"),  # too short for France
    ("030 12345678901234", "DE", "030 12345678901234"),  # too long for Germany
    ("0 12", "DE", "+49012"),  # German 2-3 digit local numbers are "possible" to phonenumbers
])
def test_a_national_number_is_read_as_phonenumbers_reads_it(raw, country, expected):
    assert normalise_phone(raw, country) == expected == _reference_normalise_phone(raw, country)


def test_a_common_national_number_needs_no_phonenumbers_parse(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("parsed")

    monkeypatch.setattr(phonenumbers, "parse", refuse)
    assert normalise_phone("030 1234567", "DE") == "+49301234567"
    assert normalise_phone("020 7946 0018", "GB") == "+442079460018"


def test_the_fast_path_covers_the_usual_zero_prefix_countries():
    assert {"DE", "FR", "GB", "NL", "AT", "CH", "IN"} <= set(FAST_REGIONS)
    # A carrier code (Brazil) or an area code added back (Jersey) makes parsing unpredictable.
    assert not {"BR", "JE", "US", "IT"} & set(FAST_REGIONS)


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
