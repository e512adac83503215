"""Decoding a CSV arrival: polars reads it, and what polars cannot read is refused with the line.

One reader for `raw_data`, label files and `mlops-assets init`, so a sample is read as its
arrivals will be. Accepted as polars reads them: a UTF-8 byte-order mark, Windows line endings,
quoted names and fields. Adjusted: a line with no value (a blank line, or only commas), which
polars reads as a row of nulls, is skipped; a column whose type the first rows suggested and a
later row breaks (a text id after 10,000 numbers) is read with every row deciding its type, as
the same file with that row first would be. Refused, naming the line or byte: text that is not
UTF-8 (latin-1, UTF-16), a line with more or fewer fields than the header (polars pads a short
line with nulls: a file cut off mid-line, or a value lost, would pass as missing values), and a
header that is one column holding `;`, tabs or `|` (a file with another separator).
"""

from __future__ import annotations

import csv
import io
import re

import polars as pl

INFER_ROWS = 10_000
SEPARATORS = {";": "';'", "\t": "tab", "|": "'|'"}
# polars' advice is for someone calling polars (`ignore_errors`, `truncate_ragged_lines`): cut it.
_ADVICE = re.compile(r"\n\s*(You might want to try|Consider setting|Original error).*", re.DOTALL)
_QUOTED = re.compile(r"`([^`]*)`")     # a value polars quotes in its message


class CsvUnreadable(ValueError):
    """A CSV that cannot be read as it is; the message names the line or byte and the rule."""


def read_csv_bytes(data: bytes, *, n_rows: int | None = None) -> pl.DataFrame:
    if not data.strip():
        raise CsvUnreadable("no header: the file is empty or blank")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CsvUnreadable("not UTF-8 text: it starts with a UTF-16/UTF-32 byte-order mark; CSV arrivals "
                            "must be UTF-8")
    try:
        try:
            frame = _read(data, n_rows, INFER_ROWS)
        except pl.exceptions.ComputeError as exc:
            if "could not parse" not in str(exc):
                raise
            frame = _read(data, n_rows, None)    # a later row breaks the type the first rows suggested
    except pl.exceptions.PolarsError as exc:
        raise CsvUnreadable(_explain(data, exc)) from exc
    _refuse_other_separator(frame)
    _refuse_short_lines(data, frame, n_rows)
    return _without_empty_rows(frame)


def _read(data: bytes, n_rows: int | None, infer: int | None) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(data), try_parse_dates=True, infer_schema_length=infer, n_rows=n_rows)


def _explain(data: bytes, exc: Exception) -> str:
    text = str(exc)
    if "utf-8" in text.lower() or "utf8" in text.lower():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = data.count(b"\n", 0, bad.start) + 1
            return (f"not UTF-8 text: line {line} has the byte 0x{data[bad.start]:02x} (offset {bad.start}); "
                    "CSV arrivals must be UTF-8 (latin-1 and other encodings are refused: export as UTF-8)")
    if "more fields" in text:
        ragged = _first_long_line(data)
        if ragged:
            return ragged
    if "could not parse" in text:
        unclosed = _unclosed_quote(data)
        if unclosed:
            return unclosed
    # A value polars quotes may be the rest of the file: its start is enough.
    text = _QUOTED.sub(lambda m: f"`{m[1][:60]}…`" if len(m[1]) > 60 else m[0], text)
    return _ADVICE.sub("", text).strip()


def _unclosed_quote(data: bytes) -> str | None:
    """The line where a quoted field opens and the file ends before it closes."""
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""), strict=True)
    done = 0
    try:
        for _ in reader:
            done = reader.line_num
    except csv.Error as exc:
        if "end of data" not in str(exc):
            return None
        return (f"line {done + 1}: a quoted field is never closed (a '\"' without its closing '\"' runs to the "
                "end of the file)")
    return None


def _first_long_line(data: bytes) -> str | None:
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace").lstrip("\ufeff"), newline=""))
    header = next(reader, [])
    for row in reader:
        if len(row) > len(header):
            return (f"line {reader.line_num} has {len(row)} fields, the header has {len(header)}; every line "
                    "must have one field per header column (quote a value that holds a comma)")
    return None


def _refuse_short_lines(data: bytes, frame: pl.DataFrame, n_rows: int | None) -> None:
    """A line with fewer fields than the header, found by Python's csv reader. Only a file whose
    last column holds nulls can have one (polars pads the missing fields at the end), so the
    common file costs a null count."""
    if frame.width < 2 or frame.height == 0 or frame.get_column(frame.columns[-1]).null_count() == 0:
        return
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace").lstrip("\ufeff"), newline=""))
    width = len(next(reader, []))
    for index, row in enumerate(reader):
        if n_rows is not None and index >= n_rows:
            return
        if 0 < len(row) < width:    # an empty list is a blank line: skipped like polars' null row
            raise CsvUnreadable(f"line {reader.line_num} has {len(row)} fields, the header has {width}; every "
                                "line must have one field per header column (a file cut off, or a value lost?)")


def _refuse_other_separator(frame: pl.DataFrame) -> None:
    if frame.width != 1:
        return
    name = frame.columns[0]
    for sep, label in SEPARATORS.items():
        if sep in name:
            shown = name if len(name) <= 80 else name[:79] + "…"
            raise CsvUnreadable(f"the header is one column {shown!r}: the file looks {label}-separated; "
                                "CSV arrivals must be comma-separated")


def _without_empty_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop the rows with no value at all (polars reads a blank line as one). A column without a
    null proves there is none, so the common file costs a look at the null counts only."""
    if frame.height == 0 or frame.width == 0 or min(frame.null_count().row(0)) == 0:
        return frame
    return frame.filter(~pl.all_horizontal(pl.all().is_null()))
