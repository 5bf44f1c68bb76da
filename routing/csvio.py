"""Reading real-world CSV files: encodings, separators, Excel quirks, and header → field mapping.

Kept free of database code so the command, the web upload and the benchmarks share one reader.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO

# Lead fields a CSV column may map to (CONTRACT §4), plus the two pseudo-targets.
FIELDS = [
    "email", "first_name", "last_name", "phone", "company", "title", "country", "region", "postcode",
    "industry", "company_size", "product", "source", "score", "priority", "value", "received_at",
]
EXTRA = "extra"  # keep the cell in Lead.extra under its header
IGNORE = "ignore"  # drop the column
TARGETS = [*FIELDS, EXTRA, IGNORE]

# Normalised header (lower-case letters and digits only) → field. Covers our own names, the
# Salesforce and HubSpot export headers, and the usual spreadsheet spellings.
SYNONYMS: dict[str, str] = {
    "email": "email", "emailaddress": "email", "mail": "email", "email1": "email", "workemail": "email",
    "firstname": "first_name", "givenname": "first_name", "forename": "first_name", "first": "first_name",
    "lastname": "last_name", "surname": "last_name", "familyname": "last_name", "last": "last_name",
    "phone": "phone", "phonenumber": "phone", "telephone": "phone", "tel": "phone", "mobile": "phone",
    "mobilephone": "phone", "mobilephonenumber": "phone", "businessphone": "phone", "workphone": "phone",
    "company": "company", "companyname": "company", "account": "company", "accountname": "company",
    "organization": "company", "organisation": "company",
    "title": "title", "jobtitle": "title", "position": "title", "role": "title",
    "country": "country", "countryregion": "country", "countrycode": "country", "mailingcountry": "country",
    "billingcountry": "country",
    "region": "region", "state": "region", "stateprovince": "region", "stateregion": "region",
    "province": "region", "county": "region", "mailingstate": "region", "mailingstateprovince": "region",
    "billingstate": "region", "billingstateprovince": "region",
    "postcode": "postcode", "postalcode": "postcode", "zip": "postcode", "zipcode": "postcode",
    "zippostalcode": "postcode", "postal": "postcode", "plz": "postcode", "mailingzippostalcode": "postcode",
    "mailingpostalcode": "postcode", "billingzippostalcode": "postcode", "billingpostalcode": "postcode",
    "industry": "industry", "sector": "industry", "segment": "industry",
    "companysize": "company_size", "employees": "company_size", "noofemployees": "company_size",
    "numberofemployees": "company_size", "employeecount": "company_size", "headcount": "company_size",
    "size": "company_size",
    "product": "product", "productinterest": "product", "interest": "product",
    "source": "source", "leadsource": "source", "originalsource": "source", "channel": "source",
    "score": "score", "leadscore": "score", "hubspotscore": "score", "rating": "score",
    "priority": "priority",
    "value": "value", "amount": "value", "dealvalue": "value", "estimatedvalue": "value",
    "receivedat": "received_at", "received": "received_at", "createdate": "received_at",
    "createddate": "received_at", "createdat": "received_at", "date": "received_at",
}

# Export presets: columns whose meaning differs from the generic guess, and the headers that
# identify the export. (Everything else falls through to SYNONYMS.)
PRESETS: dict[str, dict[str, object]] = {
    "salesforce": {
        "signature": {"leadsource", "zippostalcode", "stateprovince", "leadid", "noofemployees", "leadstatus"},
        "columns": {"rating": EXTRA, "leadstatus": EXTRA, "leadid": EXTRA, "annualrevenue": EXTRA},
    },
    "hubspot": {
        "signature": {"companyname", "recordid", "countryregion", "stateregion", "originalsource",
                      "hubspotscore", "leadstatus"},
        "columns": {"recordid": EXTRA, "leadstatus": EXTRA, "lifecyclestage": EXTRA},
    },
}


class CsvUnreadable(Exception):
    """The file as a whole cannot be read (empty, binary, no usable header): exit code 2."""


def normalise_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.replace("\ufeff", "").strip().lower())


def detect_preset(headers: list[str]) -> str:
    keys = {normalise_header(h) for h in headers}
    best, best_hits = "", 0
    for name, preset in PRESETS.items():
        hits = len(keys & preset["signature"])  # type: ignore[operator]
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def guess_mapping(headers: list[str], preset: str | None = None) -> dict[str, str]:
    """Header → target. The first column claiming a field wins; later ones go to `extra`."""
    preset = detect_preset(headers) if preset is None else preset
    overrides: dict[str, str] = PRESETS.get(preset, {}).get("columns", {})  # type: ignore[assignment]
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for header in headers:
        key = normalise_header(header)
        target = overrides.get(key) or SYNONYMS.get(key) or EXTRA
        if target in FIELDS:
            if target in taken:
                target = EXTRA
            taken.add(target)
        mapping[header] = target
    return mapping


@dataclass
class CsvFile:
    """An opened CSV: its headers and a record iterator yielding (spreadsheet row number, cells)."""

    headers: list[str]
    delimiter: str
    records: Iterator[tuple[int, list[str] | str]]
    preset: str = ""
    mapping: dict[str, str] = field(default_factory=dict)
    # Updated as the records are read: a line that is not UTF-8 can come at any point.
    decoding: dict[str, str] = field(default_factory=lambda: {"encoding": "utf-8"})

    @property
    def encoding(self) -> str:
        """How the file was read so far: utf-8, utf-8-sig (with a BOM), utf-16, or either UTF-8 one
        followed by "+cp1252" once a line was not UTF-8 and was read as Windows-1252."""
        return self.decoding["encoding"]


def _decoded_lines(stream: BinaryIO, state: dict[str, str]) -> Iterator[str]:
    """Decode line by line: UTF-8 where it is valid, cp1252 (then Latin-1) where it is not.

    Per-line fallback is what rescues files pasted together from two systems ("half Latin-1"):
    deciding once for the whole file would garble one half or the other.
    """
    first = True
    for raw in stream:
        if first:
            first = False
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            _saw_cp1252(state)
            try:
                yield raw.decode("cp1252")
            except UnicodeDecodeError:
                yield raw.decode("latin-1")


def _saw_cp1252(state: dict[str, str]) -> None:
    if not state["encoding"].endswith("+cp1252"):
        state["encoding"] += "+cp1252"


def _is_utf8(chunks: Iterable[bytes], *, final: bool = True) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in chunks:
            decoder.decode(chunk)
        decoder.decode(b"", final=final)
    except UnicodeDecodeError:
        return False
    return True


def scan_encoding(stream: BinaryIO, chunk_size: int = 1 << 20) -> str:
    """The encoding label open_csv() ends with once every line is read, found by one pass over the
    bytes (no CSV parsing): a line is valid UTF-8 exactly when its bytes are, as newlines are ASCII.
    Memory stays at one chunk however large the file."""
    head = stream.read(max(chunk_size, 3))  # the whole BOM, whatever the chunk size
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    label = "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
    rest = iter(lambda: stream.read(chunk_size), b"")
    return label if _is_utf8(chain([head], rest)) else f"{label}+cp1252"


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: 0 for d in (",", ";", "\t", "|")}
    quoted = False
    for ch in header_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _looks_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    if not sample:
        return False
    text = sample.decode("latin-1")
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\r\n\t")
    return control > max(2, len(text) // 100)


def open_csv(stream: BinaryIO, mapping: dict[str, str] | None = None) -> CsvFile:
    """Read the header and return a lazy record reader. Raises CsvUnreadable for unusable files."""
    head = stream.read(64 * 1024)
    if not head.removeprefix(codecs.BOM_UTF8).strip():
        raise CsvUnreadable("the file is empty")
    utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if not utf16 and _looks_binary(head):
        raise CsvUnreadable("the file is not text (binary data); export it as CSV and try again")
    stream = io.BufferedReader(_Prepend(head, stream))  # type: ignore[arg-type]
    state = {"encoding": "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"}
    lines: Iterator[str]
    if utf16:
        # Excel's "Unicode text" export: UTF-16 with a BOM, usually tab separated.
        state["encoding"] = "utf-16"
        lines = iter(io.TextIOWrapper(stream, encoding="utf-16", errors="replace", newline=""))
    else:
        # The label starts from the first 64 kB; later lines may still add "+cp1252" as they are
        # read. Whoever must name the encoding before reading everything uses scan_encoding().
        if not _is_utf8([head], final=False):
            _saw_cp1252(state)
        lines = _decoded_lines(stream, state)
    try:
        first = next(lines)
        while not first.strip():
            first = next(lines)
    except StopIteration as exc:
        raise CsvUnreadable("the file is empty") from exc
    # Excel writes "sep=;" as a first line to announce the separator.
    excel_sep = re.fullmatch(r'"?sep=(.)"?\s*', first.strip("\r\n"))
    if excel_sep:
        delimiter = excel_sep.group(1)
        try:
            first = next(lines)
        except StopIteration as exc:
            raise CsvUnreadable("the file has no header row") from exc
    else:
        delimiter = _sniff_delimiter(first)

    def all_lines() -> Iterator[str]:
        yield first
        yield from lines

    reader = csv.reader(all_lines(), delimiter=delimiter, quotechar='"', doublequote=True, skipinitialspace=False)
    try:
        headers = [h.replace("\ufeff", "").strip() for h in next(reader)]
    except csv.Error as exc:
        raise CsvUnreadable(f"the header row cannot be read: {exc}") from exc
    if not any(headers):
        raise CsvUnreadable("the header row is empty")
    headers = _unique_headers(headers)
    preset = detect_preset(headers)
    guessed = guess_mapping(headers, preset)
    if mapping:
        guessed.update({h: t for h, t in mapping.items() if h in guessed and t in TARGETS})
    if not {"email", "phone"} & set(guessed.values()):
        raise CsvUnreadable(
            "no email or phone column found in the header "
            f"({', '.join(headers[:8])}{'…' if len(headers) > 8 else ''})"
        )

    def records() -> Iterator[tuple[int, list[str] | str]]:
        # A str instead of cells is a record the csv module could not parse (its message).
        row = 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row += 1
                yield row, f"unreadable row: {exc}"
                continue
            row += 1
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # blank line: nothing to import, nothing to report
            yield row, cells

    return CsvFile(
        headers=headers, delimiter=delimiter, decoding=state, records=records(),
        preset=preset, mapping=guessed,
    )


def _unique_headers(headers: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, h in enumerate(headers):
        h = h or f"column_{i + 1}"
        if h in seen:
            seen[h] += 1
            h = f"{h}_{seen[h]}"
        else:
            seen[h] = 1
        out.append(h)
    return out


class _Prepend(io.RawIOBase):
    """A raw stream that first returns bytes already read (for sniffing), then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


def open_path(path: str | Path, mapping: dict[str, str] | None = None) -> tuple[CsvFile, BinaryIO]:
    stream = open(path, "rb")  # noqa: SIM115 - the caller closes it when the records are consumed
    try:
        return open_csv(stream, mapping), stream
    except Exception:
        stream.close()
        raise


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """Neutralise spreadsheet formulas on export (OWASP CSV injection): prefix with a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text
