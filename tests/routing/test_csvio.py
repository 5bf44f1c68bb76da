"""The encoding label of a whole file, as the intake preview names it before the import reads it."""

import io

import pytest

from routing.csvio import open_csv, scan_encoding

HEADER = b"Email;Name\r\n"


@pytest.mark.parametrize(("data", "label"), [
    (HEADER + "a@x.example;Jürgen\r\n".encode(), "utf-8"),
    (HEADER + "a@x.example;Jürgen\r\n".encode("cp1252"), "utf-8+cp1252"),
    (b"\xef\xbb\xbf" + HEADER + "a@x.example;Zoë\r\n".encode("cp1252"), "utf-8-sig+cp1252"),
    ("Email\tName\r\na@x.example\tJürgen\r\n".encode("utf-16"), "utf-16"),
])
def test_the_scan_agrees_with_the_label_left_after_reading_every_row(data, label):
    csvfile = open_csv(io.BytesIO(data))
    list(csvfile.records)

    assert csvfile.encoding == label
    assert scan_encoding(io.BytesIO(data)) == label


def test_a_character_split_across_two_chunks_is_still_utf_8():
    data = HEADER + "a@x.example;Jürgen\r\n".encode()
    split_inside_u_umlaut = data.index("ü".encode()) + 1

    for size in (1, 2, split_inside_u_umlaut):
        assert scan_encoding(io.BytesIO(data), chunk_size=size) == "utf-8"
