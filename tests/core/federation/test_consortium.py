"""The consortium file's record: what it accepts, what it refuses, and which datasets fit it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.data.dataset import Dataset
from core.data.loading import load_dataset
from core.errors import ConfigError, DataError
from core.federation.consortium import (
    ConsortiumError,
    ConsortiumFileInvalid,
    ConsortiumSignatureInvalid,
    MemberEntry,
    check_dataset_fits,
    parse_consortium,
    read_consortium,
    verify_signature,
    write_consortium,
)
from core.federation.policy import VerificationPolicy
from core.models.architecture import spec_for
from tests.core.federation.consortium_sample import COORDINATOR, HOSPITAL, sample_consortium

FAKE_SIGNATURE = "0x" + "11" * 65


@pytest.fixture(scope="module")
def table() -> Dataset:
    return load_dataset("breast_cancer")


@pytest.fixture(scope="module")
def images() -> Dataset:
    return load_dataset("synthetic_images")


def test_the_file_rebuilds_the_same_model_policy_and_timing(table: Dataset, tmp_path: Path) -> None:
    consortium = sample_consortium(table, signature=FAKE_SIGNATURE)
    path = tmp_path / "consortium.json"

    write_consortium(path, consortium)
    again = read_consortium(path)

    assert again == consortium
    assert again.model_spec() == spec_for(table)
    assert again.verification_policy() == VerificationPolicy()
    assert again.round_timing().commit_seconds == 30
    assert again.members[0].store_url == "https://st-mary:8601"  # trailing slash dropped
    assert again.canonical_bytes() == consortium.canonical_bytes()


def test_the_signed_form_covers_everything_but_the_signature(table: Dataset) -> None:
    consortium = sample_consortium(table)

    signed = consortium.with_signature(FAKE_SIGNATURE)
    moved = consortium.model_copy(update={"aggregator": "median"})

    assert signed.canonical_bytes() == consortium.canonical_bytes()
    assert moved.canonical_bytes() != consortium.canonical_bytes()
    assert b"signature" not in consortium.canonical_bytes()


def _raw(table: Dataset) -> dict:
    return json.loads(sample_consortium(table, signature=FAKE_SIGNATURE).to_json())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.update(extra_key=1), "extra_key is not allowed (unknown key)"),
        (lambda raw: raw["coordinator"].update(api_key="x"), "coordinator.api_key is not allowed"),
        (lambda raw: raw["policy"]["thresholds"].update(min_cosine=0.5), "digest does not match"),
        (lambda raw: raw["policy"]["thresholds"].pop("min_cosine"), "policy thresholds must be exactly"),
        # Only a suffix of the later thresholds can be missing: no policy ever lacked just this one.
        (lambda raw: raw["policy"]["thresholds"].pop("peer_quantile"), "policy thresholds must be exactly"),
        (lambda raw: raw.update(admin="0x1234"), "is not an Ethereum address"),
        (lambda raw: raw.update(aggregator="mean"), "unknown aggregator"),
        (lambda raw: raw["members"][0].update(store_url="ftp://x"), "is not an http(s):// URL"),
        (lambda raw: raw["members"].append(dict(raw["members"][0])), "listed twice"),
        (lambda raw: raw["members"][0].update(address=COORDINATOR), "coordinator's account is also listed"),
        (lambda raw: raw["model"].update(num_classes=3), "class count differs"),
        (lambda raw: raw["timing"].update(vote_seconds=0), "greater than 0"),
        (lambda raw: raw.pop("chain_id"), "chain_id Field required"),
    ],
)
def test_an_invalid_record_is_refused_with_the_field_named(table: Dataset, change, message: str) -> None:
    raw = _raw(table)
    change(raw)

    with pytest.raises(ConsortiumFileInvalid) as caught:
        parse_consortium(json.dumps(raw), source="consortium.json")

    assert message in caught.value.user_message
    assert isinstance(caught.value, ConfigError)


def test_a_file_recorded_before_the_global_margin_floor_reads_with_its_rule_and_digest(table: Dataset) -> None:
    raw = _raw(table)
    older = VerificationPolicy.from_record({k: v for k, v in VerificationPolicy().as_dict().items()
                                            if k not in ("global_margin_ratio", "strict_margin_cases")})
    raw["policy"] = {"thresholds": older.as_dict(), "digest": older.digest()}

    consortium = parse_consortium(json.dumps(raw), source="consortium.json")

    assert consortium.verification_policy() == older and older.global_margin_ratio is None


def test_a_file_recorded_before_the_strict_confidence_test_reads_with_its_rule_and_digest(table: Dataset) -> None:
    raw = _raw(table)
    older = VerificationPolicy.from_record({k: v for k, v in VerificationPolicy().as_dict().items()
                                            if k != "strict_margin_cases"})
    raw["policy"] = {"thresholds": older.as_dict(), "digest": older.digest()}

    consortium = parse_consortium(json.dumps(raw), source="consortium.json")

    assert consortium.verification_policy() == older and older.strict_margin_cases is None
    assert older.global_margin_ratio == VerificationPolicy().global_margin_ratio


def test_an_unreadable_file_and_broken_json_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConsortiumFileInvalid, match="cannot be read"):
        read_consortium(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format_version": 1,', encoding="utf-8")
    with pytest.raises(ConsortiumFileInvalid, match="not valid JSON"):
        read_consortium(broken)


def test_a_newer_format_is_named_as_such(table: Dataset) -> None:
    raw = _raw(table)
    raw["format_version"] = 3
    with pytest.raises(ConsortiumFileInvalid, match="format version 3"):
        parse_consortium(json.dumps(raw), source="c.json")


def test_an_unsigned_file_is_neither_written_nor_accepted(table: Dataset, tmp_path: Path) -> None:
    consortium = sample_consortium(table)
    with pytest.raises(ConsortiumError, match="Only a signed"):
        write_consortium(tmp_path / "c.json", consortium)
    with pytest.raises(ConsortiumSignatureInvalid, match="not signed"):
        verify_signature(consortium, lambda message, signature: consortium.admin)
    assert not (tmp_path / "c.json").exists()


def test_a_signature_by_anyone_else_is_refused(table: Dataset) -> None:
    consortium = sample_consortium(table, signature=FAKE_SIGNATURE)

    verify_signature(consortium, lambda message, signature: consortium.admin.upper().replace("0X", "0x"))
    with pytest.raises(ConsortiumSignatureInvalid, match="changed after the admin signed it"):
        verify_signature(consortium, lambda message, signature: HOSPITAL)


def test_adding_a_member_unsigns_the_record_and_refuses_repeats(table: Dataset) -> None:
    consortium = sample_consortium(table, signature=FAKE_SIGNATURE)
    new = MemberEntry(address="0x" + "b2" * 20, hospital_id="st-anne", store_url="https://st-anne:8601")

    extended = consortium.with_member(new)

    assert [m.hospital_id for m in extended.members] == ["st-mary", "st-anne"]
    assert extended.signature == ""
    with pytest.raises(ConsortiumError, match="already a member"):
        extended.with_member(new)
    with pytest.raises(ConsortiumError, match="hospital 'st-mary' is already"):
        consortium.with_member(new.model_copy(update={"hospital_id": "st-mary"}))


def test_the_reference_dataset_and_a_copy_of_it_fit(table: Dataset) -> None:
    consortium = sample_consortium(table)
    check_dataset_fits(consortium, table)
    check_dataset_fits(consortium, table.subset(np.arange(40), name="a hospital's share"))


def _table_like(table: Dataset, *, columns: int | None = None, classes: tuple[str, ...] | None = None,
                names: tuple[str, ...] | None = None) -> Dataset:
    x = table.x[:, :columns] if columns else table.x
    class_names = classes or table.class_names
    feature_names = names or (table.feature_names[: x.shape[1]] if table.feature_names else ())
    return Dataset(name="hospital data", kind=table.kind, x=x, y=table.y % len(class_names),
                   class_names=class_names, feature_names=feature_names, source="/data/h.csv")


def test_a_table_with_other_columns_or_classes_does_not_fit(table: Dataset) -> None:
    consortium = sample_consortium(table)
    swapped = (table.feature_names[1], table.feature_names[0], *table.feature_names[2:])

    cases = [
        (_table_like(table, columns=10), f"it has 10 feature columns, the consortium's model takes {table.x.shape[1]}"),
        (_table_like(table, classes=("a", "b", "c")), "it has 3 classes, the consortium's model predicts 2"),
        (_table_like(table, classes=tuple(reversed(table.class_names))), "its classes are"),
        (_table_like(table, names=swapped), f"column 1 is '{swapped[0]}'"),
    ]
    for dataset, message in cases:
        with pytest.raises(DataError) as caught:
            check_dataset_fits(consortium, dataset)
        assert message in caught.value.user_message
        assert caught.value.path == "/data/h.csv"


def test_images_of_another_size_or_kind_do_not_fit(table: Dataset, images: Dataset) -> None:
    consortium = sample_consortium(images, members=())
    small = load_dataset("synthetic_images", image_size=(16, 16))

    check_dataset_fits(consortium, images)
    with pytest.raises(DataError, match="its images are 16x16x1, the consortium's model takes 28x28x1"):
        check_dataset_fits(consortium, small)
    with pytest.raises(DataError, match="it is a table dataset, the consortium trains on image data"):
        check_dataset_fits(consortium, table)
