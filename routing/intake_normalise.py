"""Turning one lead's raw values (CSV cells or JSON) into clean field values, or reasons why not.

Pure functions, no database: the CSV pipeline calls them 100,000 times a run, so the common
cases take fast paths (an E.164 or national-format phone, an ISO country code) before the
expensive libraries.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, NamedTuple

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

TEXT_LIMITS = {
    "first_name": 100, "last_name": 100, "company": 200, "title": 200, "region": 100, "postcode": 20,
    "industry": 100, "product": 100, "source": 100,
}
PRIORITIES = {"normal", "urgent"}
# Clock skew between the sender and us is not "the future"; a lead dated tomorrow is.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)

_validate_email = EmailValidator()
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_PHONE_JUNK = re.compile(r"[\s\-().\u00a0/]")
_RANGE = re.compile(r"^\s*(\d[\d,. ]*)\s*(?:[-–—]|to)\s*(\d[\d,. ]*)\s*$")
_PLUS = re.compile(r"^\s*(\d[\d,. ]*)\s*\+\s*$")
_COUNTRY_ALIASES = {
    "usa": "US", "us": "US", "u s a": "US", "u s": "US", "united states of america": "US", "america": "US",
    "uk": "GB", "u k": "GB", "great britain": "GB", "britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB", "holland": "NL", "the netherlands": "NL",
    "czechia": "CZ", "republic of korea": "KR", "korea": "KR", "russian federation": "RU",
    "uae": "AE", "ivory coast": "CI", "deutschland": "DE", "schweiz": "CH", "suisse": "CH",
    "osterreich": "AT", "espana": "ES", "viet nam": "VN", "turkiye": "TR",
}


class RowInvalid(Exception):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = errors


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


@cache
def _country_names() -> dict[str, str]:
    from phonenumbers.geodata.locale import LOCALE_DATA

    names: dict[str, str] = {}
    for code, by_lang in LOCALE_DATA.items():
        if len(code) != 2:
            continue
        for value in by_lang.values():
            hops = 0
            while value.startswith("*") and hops < 5:  # "*aa" points at another entry; the data has a cycle
                value, hops = by_lang.get(value[1:], ""), hops + 1
            value = "" if value.startswith("*") else value
            if value:
                names.setdefault(_fold(value), code)
    names.update(_COUNTRY_ALIASES)
    return names


@cache
def normalise_country(value: str) -> str | None:
    """ISO alpha-2 from a code or a country name in most languages; None when unknown."""
    from routing.intake_countries import COUNTRY_NAMES

    text = value.strip()
    if len(text) == 2 and text.isalpha():
        code = text.upper()
        if code in _COUNTRY_CODES or code in COUNTRY_NAMES.values():
            return code
    folded = _fold(text)
    return _COUNTRY_ALIASES.get(folded) or COUNTRY_NAMES.get(folded) or _country_names().get(folded)


# Codes without phone numbers of their own are not in phonenumbers' regions.
_COUNTRY_CODES = frozenset(phonenumbers.SUPPORTED_REGIONS) | {"AQ", "BV", "HM", "GS", "TF", "UM"}


# The national-number rules are cached by region, so only real regions may reach them.
_PHONE_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
# Only separators phonenumbers also takes as punctuation: a tab or another Unicode space makes its
# parse refuse the number, so such text must go the slow way to be refused the same.
_NATIONAL_TEXT = re.compile(r"[0-9 ().\u00a0/-]{3,250}")
_NSN_MAX = 17  # phonenumbers refuses longer national numbers


class _NationalPrefix(NamedTuple):
    """What phonenumbers.parse + is_possible_number do with "0" + N in one region, decided ahead."""

    e164_prefix: str
    idd: re.Pattern[str] | None
    general: re.Pattern[str] | None
    # By len(N): True → E.164, False → the text as given, None → not predictable (the slow path).
    by_length: tuple[bool | None, ...]


def _length_result(number_len: int, possible: tuple[int, ...], local_only: tuple[int, ...]) -> str:
    # phonenumbers' _test_number_length for the general description (the unknown number type), in
    # its order, so that odd metadata (unsorted lengths) still gives its answer.
    if number_len in local_only:
        return "local"
    if number_len == possible[0]:
        return "possible"
    if number_len < possible[0]:
        return "short"
    if number_len > possible[-1]:
        return "long"
    return "possible" if number_len in possible[1:] else "invalid"


@cache
def _national_prefix(region: str) -> _NationalPrefix | None:
    """The rule for a national-format number in a region where parsing is predictable, else None.

    Predictable: the national prefix is "0" and, for text starting with "0", the prefix-for-parsing
    pattern takes exactly that "0" with nothing captured and nothing transformed (so no carrier
    codes, no area codes added back as in the Channel Islands or Argentina).
    """
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.national_prefix != "0" or metadata.national_prefix_transform_rule:
        return None
    for_parsing = metadata.national_prefix_for_parsing or ""
    # "0", "0|180020" (GB) and "[08]" (LT) all strip just the "0" from a number that starts with one.
    if not re.fullmatch(r"0(\|.*)?|\[\d*0\d*\]", for_parsing) or re.compile(for_parsing).groups:
        return None
    general = metadata.general_desc
    possible = general.possible_length
    if not possible:
        return None
    calling_code = metadata.country_code
    # is_possible_number judges by the calling code's main region (US for +1, GB for +44).
    main = phonenumbers.region_code_for_country_code(calling_code)
    main_metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(calling_code, main)
    if main_metadata is None or not main_metadata.general_desc.possible_length:
        return None
    main_general = main_metadata.general_desc
    by_length: list[bool | None] = [None, None]  # "0" + one digit is not even a viable number
    for number_len in range(2, _NSN_MAX + 2):
        if _length_result(number_len, possible, general.possible_length_local_only) not in ("possible", "long"):
            by_length.append(None)  # parse keeps the "0" as part of the number: rare, left to it
        elif number_len > _NSN_MAX:
            by_length.append(False)  # parse refuses it as too long
        else:
            result = _length_result(number_len, main_general.possible_length, main_general.possible_length_local_only)
            by_length.append(result in ("possible", "local"))
    pattern = general.national_number_pattern
    return _NationalPrefix(
        e164_prefix=f"+{calling_code}",
        idd=re.compile(metadata.international_prefix) if metadata.international_prefix else None,
        general=re.compile(pattern) if pattern else None,
        by_length=tuple(by_length),
    )


def normalise_phone(value: str, country: str = "") -> str:
    """E.164 where the number can be understood, else the trimmed text as given."""
    text = value.strip()
    compact = _PHONE_JUNK.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if _E164.fullmatch(compact):
        return compact
    # "030 1234567" in DE: parse would only strip the "0" and check the length (~30 µs); the rule
    # gives the same answer in ~2 µs. Anything it cannot vouch for still goes to phonenumbers.
    if compact[:1] == "0" and country in _PHONE_REGIONS and _NATIONAL_TEXT.fullmatch(text):
        rule = _national_prefix(country)
        national = compact[1:]
        if (
            rule is not None
            and len(national) < len(rule.by_length)
            # An international prefix ("012" in Israel) makes parse read a calling code instead.
            and not (rule.idd and rule.idd.match(compact))
            # A region whose numbers may begin with "0" keeps it when the rest would not be a number.
            and not (rule.general and rule.general.fullmatch(compact))
        ):
            e164 = rule.by_length[len(national)]
            if e164 is not None:
                return rule.e164_prefix + national if e164 else text
    try:
        number = phonenumbers.parse(text, country or None)
    except phonenumbers.NumberParseException:
        return text
    if phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return text


def _int_text(text: str) -> int:
    cleaned = text.replace(",", "").replace(" ", "").replace("\u00a0", "")
    if cleaned.count(".") == 1 and cleaned.endswith(".0"):
        cleaned = cleaned[:-2]
    return int(cleaned.replace(".", "")) if re.fullmatch(r"\d{1,3}(\.\d{3})+", cleaned) else int(cleaned)


def normalise_company_size(value: Any) -> int:
    """"51-200" → 51 (the lower bound: a rule "company_size gte 50" must hold for the whole range)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError
        return value
    text = str(value).strip()
    match = _RANGE.match(text) or _PLUS.match(text)
    if match:
        text = match.group(1)
    number = _int_text(text)
    if number < 0:
        raise ValueError
    return number


def normalise_score(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        value = int(value)
    number = value if isinstance(value, int) else int(Decimal(str(value).strip()))
    if not 0 <= number <= 100 or (not isinstance(value, int) and Decimal(str(value).strip()) != number):
        raise ValueError
    return number


def normalise_value(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise InvalidOperation
    text = re.sub(r"[^\d.,\-]", "", str(value))
    if "," in text and "." in text:
        text = text.replace(",", "") if text.rfind(".") > text.rfind(",") else text.replace(".", "").replace(",", ".")
    elif "," in text:
        text = text.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+", text) else text.replace(",", ".")
    amount = Decimal(text)
    if not amount.is_finite() or abs(amount) >= Decimal("1e12"):
        raise InvalidOperation
    return amount.quantize(Decimal("0.01"))


def normalise_received_at(value: Any, now: dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value).strip()
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            if day is None:
                raise ValueError
            moment = dt.datetime.combine(day, dt.time())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    if moment > now + FUTURE_TOLERANCE:
        raise OverflowError
    return moment


# A strict subset of what Django's EmailValidator accepts: the common address passes without the
# validator's two regexes and IDNA step; anything else still goes through the validator.
_SIMPLE_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
_CACHE_LIMIT = 20_000
_MISSING = object()


def _email_error(email: str) -> bool:
    if len(email) > 254:
        return True
    if _SIMPLE_EMAIL.fullmatch(email):
        return False
    try:
        _validate_email(email)
    except ValidationError:
        return True
    return False


class LeadCleaner:
    """normalise_lead with memory: columns like country, size, score or date repeat their values
    thousands of times in one file, so each distinct raw value is parsed once (bounded caches keep
    memory flat)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self._caches: dict[str, dict[Any, tuple[Any, str | None]]] = {}

    def _cached(self, kind: str, raw: Any, parse) -> tuple[Any, str | None]:
        cache = self._caches.setdefault(kind, {})
        key = raw if isinstance(raw, str) else (type(raw).__name__, raw) if isinstance(raw, int | float) else _MISSING
        if key is not _MISSING:
            hit = cache.get(key)
            if hit is not None:
                return hit
        result = parse(raw)
        if key is not _MISSING:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = result
        return result

    # Each parser returns (value, error message or None).
    def _country(self, raw: Any) -> tuple[Any, str | None]:
        code = normalise_country(str(raw))
        return (code, None) if code else ("", f"unknown country {str(raw)!r}")

    def _size(self, raw: Any) -> tuple[Any, str | None]:
        try:
            size = normalise_company_size(raw)
        except (ValueError, TypeError):
            return None, f"company size must be a number or a range like 51-200, not {raw!r}"
        return (size, None) if size <= 2_147_483_647 else (None, "company size is too large")

    def _score(self, raw: Any) -> tuple[Any, str | None]:
        try:
            return normalise_score(raw), None
        except (ValueError, TypeError, InvalidOperation):
            return None, f"score must be a whole number from 0 to 100, not {raw!r}"

    def _priority(self, raw: Any) -> tuple[Any, str | None]:
        p = str(raw).lower()
        return (p, None) if p in PRIORITIES else ("normal", f"priority must be normal or urgent, not {raw!r}")

    def _value(self, raw: Any) -> tuple[Any, str | None]:
        try:
            return normalise_value(raw), None
        except (InvalidOperation, ValueError, TypeError):
            return None, f"value must be an amount, not {raw!r}"

    def _received(self, raw: Any) -> tuple[Any, str | None]:
        try:
            return normalise_received_at(raw, self.now), None
        except OverflowError:
            return self.now, f"received_at {raw!s} is in the future"
        except (ValueError, TypeError):
            return self.now, f"received_at must be an ISO 8601 date/time, not {raw!r}"

    def clean(self, values: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Clean one lead. Returns (data, errors); errors are (field, message) and empty when valid.

        `values` holds lead fields (strings from CSV, any JSON type from the API) plus `extra` (dict).
        Empty strings and None mean "not given".
        """
        errors: list[tuple[str, str]] = []
        given: dict[str, Any] = {}
        for name, v in values.items():
            if isinstance(v, str):
                v = v.strip()
                if v:
                    given[name] = v
            elif v is not None:
                given[name] = v
        get = given.get
        data: dict[str, Any] = {}

        for name, limit in TEXT_LIMITS.items():
            v = get(name)
            text = "" if v is None else v if isinstance(v, str) else str(v)
            if len(text) > limit:
                errors.append((name, f"longer than {limit} characters"))
            data[name] = text

        email = get("email")
        if email is not None:
            email = str(email).lower()
            if _email_error(email):
                errors.append(("email", f"invalid email address {str(given['email'])!r}"))
        data["email"] = email or ""

        data["country"] = ""
        if (raw := get("country")) is not None:
            data["country"], err = self._cached("country", raw, self._country)
            if err:
                errors.append(("country", err))

        phone = get("phone")
        data["phone"] = normalise_phone(str(phone), data["country"]) if phone is not None else ""
        if len(data["phone"]) > 40:
            errors.append(("phone", "longer than 40 characters"))

        if not data["email"] and not data["phone"] and not any(f == "email" for f, _ in errors):
            errors.append(("email", "email or phone is required"))
            errors.append(("phone", "email or phone is required"))

        for name, kind, parse, default in (
            ("company_size", "size", self._size, None),
            ("score", "score", self._score, None),
            ("priority", "priority", self._priority, "normal"),
            ("value", "value", self._value, None),
            ("received_at", "received", self._received, self.now),
        ):
            raw = get(name)
            if raw is None:
                data[name] = default
                continue
            data[name], err = self._cached(kind, raw, parse)
            if err:
                errors.append((name, err))

        extra = values.get("extra") or {}
        if not isinstance(extra, dict):
            errors.append(("extra", "extra must be an object"))
            extra = {}
        data["extra"] = extra
        return data, errors


def normalise_lead(values: dict[str, Any], *, now: dt.datetime) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Clean one lead (see LeadCleaner.clean); for a single lead, as the API receives them."""
    return LeadCleaner(now).clean(values)


# -- the CSV fast path -------------------------------------------------------------------------
def row_cleaner(
    cleaner: LeadCleaner, columns: dict[str, int], extras: list[tuple[str, int]]
) -> Callable[[list[str]], dict[str, Any] | None]:
    """A per-file function cleaning one CSV row's cells, or returning None when the row needs the full
    LeadCleaner.clean (any error, or anything unusual) — which then gives the same data or the exact
    error messages. So the fast path only ever has to recognise a clean row, never word a fault.

    `columns`: lead field → cell index; `extras`: (header, cell index) kept in `extra`.
    It is column-aware: the fields whose values repeat (country, size, score, priority, value, date)
    are looked up by their raw cell in a per-file table, so each distinct cell is parsed once.
    """
    now = cleaner.now
    base: dict[str, Any] = dict.fromkeys(TEXT_LIMITS, "")
    base.update(email="", country="", phone="", company_size=None, score=None, priority="normal", value=None,
                received_at=now)
    text = [(name, columns[name], limit) for name, limit in TEXT_LIMITS.items() if name in columns]
    email_at = columns.get("email")
    country_at = columns.get("country")
    phone_at = columns.get("phone")

    def by_cell(kind: str, parse: Callable[[Any], tuple[Any, str | None]], default: Any):
        table: dict[str, tuple[Any, str | None]] = {}

        def lookup(cell: str) -> tuple[Any, str | None]:
            hit = table.get(cell)
            if hit is None:
                stripped = cell.strip()
                hit = cleaner._cached(kind, stripped, parse) if stripped else (default, None)
                if len(table) >= _CACHE_LIMIT:
                    table.clear()
                table[cell] = hit
            return hit

        return lookup

    country = by_cell("country", cleaner._country, "")
    repeating = [
        (name, columns[name], by_cell(kind, parse, default))
        for name, kind, parse, default in (
            ("company_size", "size", cleaner._size, None),
            ("score", "score", cleaner._score, None),
            ("priority", "priority", cleaner._priority, "normal"),
            ("value", "value", cleaner._value, None),
            ("received_at", "received", cleaner._received, now),
        )
        if name in columns
    ]
    simple_email = _SIMPLE_EMAIL.fullmatch
    phone_junk = _PHONE_JUNK.sub
    e164 = _E164.fullmatch

    def clean_row(cells: list[str]) -> dict[str, Any] | None:
        data = base.copy()
        for name, at, limit in text:
            v = cells[at].strip()
            if len(v) > limit:
                return None
            data[name] = v
        if email_at is not None:
            email = cells[email_at].strip().lower()
            if email and (len(email) > 254 or not simple_email(email)):
                return None  # maybe valid after all (the full validator), maybe not: the slow path says
            data["email"] = email
        if country_at is not None:
            code, err = country(cells[country_at])
            if err:
                return None
            data["country"] = code
        if phone_at is not None and (phone := cells[phone_at].strip()):
            compact = phone_junk("", phone)
            if compact.startswith("00"):
                compact = "+" + compact[2:]
            # The E.164 shape needs no phonenumbers parse (the common case); anything else does.
            phone = compact if e164(compact) else normalise_phone(phone, data["country"])
            if len(phone) > 40:
                return None
            data["phone"] = phone
        if not data["email"] and not data["phone"]:
            return None
        for name, at, lookup in repeating:
            value, err = lookup(cells[at])
            if err:
                return None
            data[name] = value
        extra = {}
        for header, at in extras:
            if v := cells[at].strip():
                extra[header] = v
        data["extra"] = extra
        return data

    return clean_row
