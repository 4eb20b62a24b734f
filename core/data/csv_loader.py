"""Loads a CSV table of patients into a table `Dataset`, reporting every problem it finds.

Missing cells and non-numeric feature columns are reported with their row numbers (as a
spreadsheet shows them: the header is row 1) rather than silently dropped, because a model
trained on quietly altered data is worse than no model. Dropping rows is an explicit opt-in.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.dataset import DataKind, Dataset
from core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "drop_rows")
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "#n/a"})
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_CLASSES = 100
# Beyond this magnitude a column is likely in the wrong unit or encoding (and squaring it would
# overflow): it is still scaled correctly, with a warning that names it.
LARGE_VALUE = 1e150
_SHOWN_ROWS = 5


def standardize(x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Z-scores each column with its own mean/std; constant columns become 0. Returns the
    float32 matrix and the indices of the constant columns."""
    values = x.astype(np.float64)
    # Each column divided by its largest magnitude first: the z-scores are the same, and the sums
    # and squares behind mean and std cannot overflow however large the values (up to float64's max).
    magnitude = np.abs(values).max(axis=0) if values.size else np.ones(values.shape[1])
    values = values / np.where(magnitude > 0, magnitude, 1.0)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    constant = [int(i) for i in np.flatnonzero(std <= 1e-12 * np.maximum(1.0, np.abs(mean)))]
    safe = std.copy()
    safe[constant] = 1.0
    out = (values - mean) / safe
    out[:, constant] = 0.0
    return out.astype(np.float32), constant


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _rows_text(rows: Sequence[int]) -> str:
    """ "row 4" or "rows 4, 9, 17, ..." (file rows, the header being row 1)."""
    shown = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
    return ("row " if len(rows) == 1 else "rows ") + shown + (", ..." if len(rows) > _SHOWN_ROWS else "")


@dataclass(frozen=True)
class CsvTable:
    """A CSV file as text cells, with where each row stood in the file."""

    header: list[str]
    rows: list[list[str]]
    line_numbers: list[int]  # the file row of each data row, header = 1
    encoding: str
    delimiter: str


def _decode(raw: bytes, path: Path) -> tuple[str, str]:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), "UTF-16"
        except UnicodeDecodeError as exc:
            raise DataError(
                f"The CSV file '{path}' is damaged UTF-16 text.", path=str(path), detail=str(exc)
            ) from exc
    head = raw[:8192]
    if b"\x00" in head:
        raise DataError(
            f"The file '{path}' is not a CSV text file (it contains binary data); "
            "export the table from your spreadsheet program as CSV.",
            path=str(path),
        )
    try:
        return raw.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError as utf8_error:
        try:
            # Spreadsheets on Windows save CSV as Windows-1252 by default.
            return raw.decode("cp1252"), "Windows-1252"
        except UnicodeDecodeError:
            line = raw[: utf8_error.start].count(b"\n") + 1
            raise DataError(
                f"The CSV file '{path}' is not valid text: byte 0x{raw[utf8_error.start]:02X} on row {line} "
                "is neither UTF-8 nor Windows-1252. Save the file as 'CSV UTF-8'.",
                path=str(path),
                detail=str(utf8_error),
            ) from utf8_error


def _delimiter(first_line: str) -> str:
    # The header decides: European spreadsheets write ';', some exports use tabs.
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def read_table(path: Path) -> CsvTable:
    """The raw cells of a CSV file (header and rows as text), checked for size, encoding and
    shape; for previews before the user picks the label column, and for `load_csv`."""
    if not path.is_file():
        raise DataError(f"The CSV file '{path}' does not exist.", path=str(path))
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(
            f"The CSV file '{path}' is {size // (1024 * 1024)} MB; tables larger than "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MB are not supported.",
            path=str(path),
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"The CSV file '{path}' cannot be read.", path=str(path), detail=str(exc)) from exc
    text, encoding = _decode(raw, path)
    if not text.strip():
        raise DataError(f"The CSV file '{path}' is empty.", path=str(path))
    first_line = next(line for line in text.splitlines() if line.strip())
    delimiter = _delimiter(first_line)

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank line
            if header is None:
                header = [cell.strip() for cell in record]
                continue
            rows.append([cell.strip() for cell in record])
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(
            f"The CSV file '{path}' is malformed near row {reader.line_num}: {exc}.",
            path=str(path),
        ) from exc
    if header is None:
        raise DataError(f"The CSV file '{path}' is empty.", path=str(path))
    _check_header(header, path)
    if not rows:
        raise DataError(f"The CSV file '{path}' has a header but no data rows.", path=str(path))
    ragged = [(line, len(r)) for line, r in zip(lines, rows, strict=True) if len(r) != len(header)]
    if ragged:
        examples = "; ".join(f"row {line} has {n}" for line, n in ragged[:_SHOWN_ROWS])
        raise DataError(
            f"The CSV file '{path}' has {len(ragged)} row(s) whose number of fields differs from the "
            f"header's {len(header)} columns ({examples}"
            + ("; ..." if len(ragged) > _SHOWN_ROWS else "")
            + ").",
            path=str(path),
        )
    return CsvTable(header, rows, lines, encoding, delimiter)


def _check_header(header: list[str], path: Path) -> None:
    empty = [i + 1 for i, name in enumerate(header) if not name]
    if empty:
        raise DataError(
            f"The CSV file '{path}' has column(s) without a name in its header (position(s) "
            f"{', '.join(map(str, empty))}); every column needs a name.",
            path=str(path),
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(
            f"The CSV file '{path}' has duplicate column names: {', '.join(repr(d) for d in duplicates)}.",
            path=str(path),
        )
    if len(header) < 2:
        raise DataError(
            f"The CSV file '{path}' has a single column '{header[0]}'; it needs feature columns and a "
            "label column (is the delimiter a comma, semicolon or tab?).",
            path=str(path),
        )


def _is_missing(cell: str) -> bool:
    return cell.lower() in MISSING_TOKENS


def _parse_float(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _labels(values: list[str], column: str, path: Path) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    notes: list[str] = []
    numbers = [_parse_float(v) for v in values]
    if all(n is not None for n in numbers):
        floats = [float(n) for n in numbers if n is not None]
        if any(f != round(f) for f in floats):
            example = next(v for v, f in zip(values, floats, strict=True) if f != round(f))
            raise DataError(
                f"The label column '{column}' in '{path}' holds continuous numbers (e.g. {example}); "
                "pick a column that holds classes.",
                path=str(path),
            )
        ints = [int(round(f)) for f in floats]
        distinct = sorted(set(ints))
        names = tuple(str(v) for v in distinct)
        index = {v: i for i, v in enumerate(distinct)}
        y = np.array([index[v] for v in ints], dtype=np.int64)
    else:
        distinct_s = sorted(set(values))
        names = tuple(distinct_s)
        index_s = {v: i for i, v in enumerate(distinct_s)}
        y = np.array([index_s[v] for v in values], dtype=np.int64)
    if len(names) > MAX_CLASSES or (len(values) >= 20 and len(names) > len(values) // 2):
        raise DataError(
            f"The label column '{column}' in '{path}' has {len(names)} distinct values in "
            f"{len(values)} rows; it looks like an identifier or a measurement, not a class. "
            "Pick the column that holds the diagnosis.",
            path=str(path),
        )
    if len(names) < 2:
        notes.append(f"Only one class ('{names[0]}') is present in label column '{column}'.")
    return y, names, notes


def load_csv(
    path: str | Path,
    *,
    label_column: str | None = None,
    drop_columns: Sequence[str] = (),
    missing: str = "error",
) -> Dataset:
    """Loads a CSV table: `label_column` (default: the last column) holds the classes, the
    `drop_columns` (e.g. a patient id) are left out, every other column must be numeric.

    `missing="drop_rows"` drops rows with missing cells in the used columns and records that
    in `Dataset.notes`; the default `"error"` reports them.
    """
    file = Path(path)
    if missing not in MISSING_POLICIES:
        raise ConfigError(
            f"Unknown missing-value policy '{missing}'; choose one of {', '.join(MISSING_POLICIES)}."
        )
    table = read_table(file)
    header = table.header
    available = ", ".join(repr(h) for h in header)

    notes: list[str] = []
    if label_column is None:
        label_column = header[-1]
        notes.append(f"Label column '{label_column}' (the last column) chosen by default.")
    elif label_column not in header:
        raise DataError(
            f"The CSV file '{file}' has no column '{label_column}'. Available columns: {available}.",
            path=str(file),
        )
    unknown = [c for c in drop_columns if c not in header]
    if unknown:
        raise DataError(
            f"The CSV file '{file}' has no column(s) {', '.join(repr(c) for c in unknown)} to leave out. "
            f"Available columns: {available}.",
            path=str(file),
        )
    if label_column in drop_columns:
        raise DataError(f"The label column '{label_column}' cannot also be left out.", path=str(file))
    feature_cols = [i for i, h in enumerate(header) if h != label_column and h not in drop_columns]
    if not feature_cols:
        raise DataError(
            f"The CSV file '{file}' has no feature columns left besides the label.", path=str(file)
        )
    label_idx = header.index(label_column)
    used = [label_idx, *feature_cols]

    missing_rows: dict[int, list[int]] = {}  # column index -> file rows
    for row, line in zip(table.rows, table.line_numbers, strict=True):
        for c in used:
            if _is_missing(row[c]):
                missing_rows.setdefault(c, []).append(line)

    keep = list(range(len(table.rows)))
    if missing_rows:
        if missing == "error":
            parts = [
                f"column '{header[c]}' has {_count(len(lines), 'missing value')} ({_rows_text(lines)})"
                for c, lines in sorted(missing_rows.items())
            ]
            raise DataError(
                f"The CSV file '{file}' has missing values: "
                + "; ".join(parts)
                + ". Fill them in, leave the column out, or choose to drop incomplete rows.",
                path=str(file),
            )
        bad_lines = sorted({line for lines in missing_rows.values() for line in lines})
        bad = set(bad_lines)
        keep = [i for i, line in enumerate(table.line_numbers) if line not in bad]
        if not keep:
            raise DataError(
                f"Every row of '{file}' has a missing value; nothing is left to load.", path=str(file)
            )
        notes.append(
            f"Dropped {len(bad_lines)} of {_count(len(table.rows), 'row')} with missing values "
            f"({_rows_text(bad_lines)})."
        )

    x = np.empty((len(keep), len(feature_cols)), dtype=np.float64)
    non_numeric: list[str] = []
    for j, c in enumerate(feature_cols):
        bad_cells: list[tuple[int, str]] = []
        for i, r in enumerate(keep):
            value = _parse_float(table.rows[r][c])
            if value is None:
                bad_cells.append((table.line_numbers[r], table.rows[r][c]))
            else:
                x[i, j] = value
        if bad_cells:
            examples = ", ".join(f"'{v}' in row {line}" for line, v in bad_cells[:3])
            non_numeric.append(
                f"column '{header[c]}' has {_count(len(bad_cells), 'non-numeric value')} (e.g. {examples})"
            )
    if non_numeric:
        raise DataError(
            f"The CSV file '{file}' has non-numeric feature columns: "
            + "; ".join(non_numeric)
            + ". Leave such columns out (e.g. an identifier) or encode them as numbers.",
            path=str(file),
        )

    y, class_names, label_notes = _labels([table.rows[r][label_idx] for r in keep], label_column, file)
    notes.extend(label_notes)
    scaled, constant = standardize(x)
    feature_names = tuple(header[c] for c in feature_cols)
    for j in np.flatnonzero(np.abs(x).max(axis=0) > LARGE_VALUE):
        largest = np.abs(x[:, j]).max()
        warning = (f"Column '{feature_names[j]}' of '{file}' holds values as large as {largest:.3g}; "
                   "it was scaled like every column, but check its unit.")
        notes.append(warning)
        logger.warning("%s", warning)
    if constant:
        notes.append("Constant column(s) set to 0: " + ", ".join(feature_names[i] for i in constant) + ".")
    if drop_columns:
        notes.append("Left out column(s): " + ", ".join(drop_columns) + ".")
    if table.encoding != "UTF-8":
        notes.append(f"Read as {table.encoding} text.")
    notes.append("Features z-scored with this file's own mean and standard deviation.")
    for note in notes:
        logger.info("%s: %s", file, note)
    return Dataset(
        name=file.stem,
        kind=DataKind.TABLE,
        x=scaled,
        y=y,
        class_names=class_names,
        feature_names=feature_names,
        source=str(file),
        notes=tuple(notes),
    )
