"""CSV tables: labels, dropped columns, scaling, and every malformed input reported clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data.csv_loader import load_csv
from core.data.dataset import DataKind
from core.errors import ConfigError, DataError

HEADER = "patient_id,diagnosis,radius,texture,area\n"


def write(tmp_path: Path, text: str | bytes, name: str = "table.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def wdbc_like(rows: int = 12) -> str:
    rng = np.random.default_rng(0)
    lines = [HEADER]
    for i in range(rows):
        label = "M" if i % 3 == 0 else "B"
        lines.append(
            f"P{1000 + i},{label},{rng.normal(14, 3):.3f},{rng.normal(19, 4):.3f},"
            f"{rng.normal(650, 300):.1f}\n"
        )
    return "".join(lines)


def test_string_labels_and_dropped_id_column(tmp_path: Path) -> None:
    path = write(tmp_path, wdbc_like())

    ds = load_csv(path, label_column="diagnosis", drop_columns=["patient_id"])

    assert ds.kind is DataKind.TABLE
    assert ds.class_names == ("B", "M")
    assert ds.feature_names == ("radius", "texture", "area")
    assert ds.x.shape == (12, 3) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64
    assert ds.class_counts() == {"B": 8, "M": 4}
    assert ds.y[0] == 1  # first row is M
    np.testing.assert_allclose(ds.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x.std(axis=0), 1.0, atol=1e-5)
    ds.require_trainable()


def test_zscore_uses_the_files_own_statistics(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,label\n1,10,0\n2,10,1\n3,10,0\n")

    ds = load_csv(path, label_column="label")

    np.testing.assert_allclose(ds.x[:, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(ds.x[:, 1], 0.0)  # constant column
    assert any("Constant column(s) set to 0: b" in note for note in ds.notes)


def test_numeric_labels_become_sorted_classes(tmp_path: Path) -> None:
    path = write(tmp_path, "x1,x2,grade\n0.1,5,2\n0.2,6,1\n0.3,7,2.0\n0.5,1,1\n")

    ds = load_csv(path, label_column="grade")

    assert ds.class_names == ("1", "2")
    assert ds.y.tolist() == [1, 0, 1, 0]


def test_default_label_is_last_column_and_noted(tmp_path: Path) -> None:
    path = write(tmp_path, "x1,x2,outcome\n1,2,yes\n3,4,no\n5,6,yes\n")

    ds = load_csv(path)

    assert ds.class_names == ("no", "yes")
    assert ds.notes[0] == "Label column 'outcome' (the last column) chosen by default."


def test_semicolon_delimiter_and_utf8_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffx1;x2;label\n1;2;a\n3;4;b\n".encode())

    ds = load_csv(path, label_column="label")

    assert ds.feature_names == ("x1", "x2")
    assert ds.num_samples == 2


def test_missing_values_are_reported_with_rows(tmp_path: Path) -> None:
    lines = ["x,y,label\n"]
    for row in range(2, 22):  # file rows 2..21
        x = "" if row in (4, 9) else ("NA" if row == 17 else str(row))
        lines.append(f"{x},{row * 2},{row % 2}\n")
    path = write(tmp_path, "".join(lines))

    with pytest.raises(DataError) as info:
        load_csv(path, label_column="label")

    message = info.value.user_message
    assert "column 'x' has 3 missing values (rows 4, 9, 17)" in message
    assert str(path) in message
    assert "column 'y'" not in message


def test_missing_values_can_be_dropped_explicitly(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y,label\n1,2,a\n,3,b\n4,5,a\n6,7,\n8,9,b\n")

    ds = load_csv(path, label_column="label", missing="drop_rows")

    assert ds.num_samples == 3
    assert ds.class_counts() == {"a": 2, "b": 1}
    assert "Dropped 2 of 5 rows with missing values (rows 3, 5)." in ds.notes


def test_missing_in_left_out_column_is_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x,label\n,1,a\n,2,b\n")

    ds = load_csv(path, label_column="label", drop_columns=["id"])

    assert ds.num_samples == 2


def test_unknown_missing_policy(tmp_path: Path) -> None:
    path = write(tmp_path, wdbc_like())
    with pytest.raises(ConfigError, match="missing-value policy 'impute'"):
        load_csv(path, label_column="diagnosis", missing="impute")


def test_non_numeric_feature_column_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, wdbc_like())  # patient_id "P1000" is text

    with pytest.raises(DataError) as info:
        load_csv(path, label_column="diagnosis")

    message = info.value.user_message
    assert "column 'patient_id' has 12 non-numeric values" in message
    assert "'P1000' in row 2" in message


def test_unknown_label_column_lists_available_columns(tmp_path: Path) -> None:
    path = write(tmp_path, wdbc_like())

    with pytest.raises(DataError) as info:
        load_csv(path, label_column="Diagnosis")

    message = info.value.user_message
    assert "no column 'Diagnosis'" in message
    assert "'patient_id', 'diagnosis', 'radius', 'texture', 'area'" in message


def test_unknown_drop_column(tmp_path: Path) -> None:
    path = write(tmp_path, wdbc_like())
    with pytest.raises(DataError, match="no column\\(s\\) 'mrn' to leave out"):
        load_csv(path, label_column="diagnosis", drop_columns=["mrn"])


def test_one_class_file_loads_but_is_not_trainable(tmp_path: Path) -> None:
    path = write(tmp_path, "x1,x2,diagnosis\n1,2,M\n3,4,M\n5,6,M\n")

    ds = load_csv(path, label_column="diagnosis")

    assert ds.class_names == ("M",)
    with pytest.raises(DataError, match="only one class"):
        ds.require_trainable()


def test_continuous_label_column_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x1,x2,weight\n1,2,70.5\n3,4,80.1\n")
    with pytest.raises(DataError, match="continuous numbers"):
        load_csv(path, label_column="weight")


def test_identifier_as_label_is_refused(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i * 2},ID{i}\n" for i in range(40))
    path = write(tmp_path, "x1,x2,patient\n" + rows)
    with pytest.raises(DataError, match="40 distinct values in 40 rows"):
        load_csv(path, label_column="patient")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "is empty"),
        ("\n  \n\n", "is empty"),
        ("x1,x2,label\n", "has a header but no data rows"),
        ("x1,x2,label\n\n", "has a header but no data rows"),
        ("x1,x2,label\n1,2,a\n3,4\n5,6,b,7\n", "row 3 has 2; row 4 has 4"),
        ("x1,,label\n1,2,a\n", "without a name"),
        ("x1,x1,label\n1,2,a\n", "duplicate column names: 'x1'"),
        ('x1,x2,label\n1,"2,a\n', "malformed"),
    ],
)
def test_malformed_files(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path, content)

    with pytest.raises(DataError) as info:
        load_csv(path, label_column="label")

    assert expected in info.value.user_message
    assert info.value.path == str(path)


def test_binary_file_renamed_csv(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    path = write(tmp_path, png, "scan.csv")

    with pytest.raises(DataError, match="not a CSV text file"):
        load_csv(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "nope.csv")


def test_windows_1252_file_loads_with_a_note(tmp_path: Path) -> None:
    path = write(tmp_path, "taille,poids,diagnostic\n1,2,bénin\n3,4,malin\n".encode("cp1252"))

    ds = load_csv(path, label_column="diagnostic")

    assert ds.class_names == ("bénin", "malin")
    assert "Read as Windows-1252 text." in ds.notes


def test_utf16_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "x1\tx2\tlabel\n1\t2\ta\n3\t4\tb\n".encode("utf-16"))

    ds = load_csv(path, label_column="label")

    assert ds.num_samples == 2
    assert "Read as UTF-16 text." in ds.notes


def test_undecodable_bytes_are_reported(tmp_path: Path) -> None:
    # 0x81 is defined neither in UTF-8 (as a start byte) nor in Windows-1252.
    path = write(tmp_path, b"x1,x2,label\n1,2,a\n3,4,\x81b\n")

    with pytest.raises(DataError) as info:
        load_csv(path, label_column="label")

    assert "byte 0x81 on row 3" in info.value.user_message


def test_infinite_values_are_not_accepted_as_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "x1,x2,label\n1,inf,a\n3,4,b\n")
    with pytest.raises(DataError, match="column 'x2' has 1 non-numeric value"):
        load_csv(path, label_column="label")


def test_a_column_of_huge_values_is_scaled_and_named_not_zeroed(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    rows = ["id,diagnosis,radius,dose\n"] + [
        f"P{i},{'M' if i % 2 else 'B'},{12 + i % 5},{(1 + i % 4)}e300\n" for i in range(12)
    ]
    path = write(tmp_path, "".join(rows))

    with caplog.at_level("WARNING"), np.errstate(all="raise"):  # no raw numpy overflow on the way
        ds = load_csv(path, label_column="diagnosis", drop_columns=["id"])

    dose = ds.x[:, ds.feature_names.index("dose")]
    assert np.isfinite(ds.x).all()
    assert dose.std() == pytest.approx(1.0, abs=1e-3)  # z-scored like any column, not zeroed
    assert np.corrcoef(dose, [1 + i % 4 for i in range(12)])[0, 1] == pytest.approx(1.0)
    assert any("'dose'" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert any("'dose'" in note for note in ds.notes)
