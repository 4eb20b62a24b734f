"""The cells of an evaluation's results.json, read into typed records, checked where they enter.

A cell is one federation run: one dataset, partition, attack, defence, malicious fraction and seed.
The cells that share all but the defence and the seed form a `Setting`; the report compares the
defences within a setting and aggregates over seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from core.errors import ConfigError

FORMAT = "medfedchain-evaluation/1"
VERIFICATION = "verification"  # the defence under study: the majority verification of each model
STATUSES = ("accepted", "rejected", "failed")

# The per-cell scalar fields, in the order results.csv lists them (lists and records left out).
CELL_COLUMNS = (
    "dataset", "partition", "alpha", "attack", "defence", "malicious_fraction", "hospitals",
    "malicious", "seed", "rounds", "final_accuracy", "reference_accuracy", "clean_accuracy",
    "poisoned_accepted", "poisoned_total", "honest_rejected", "honest_total", "backdoor_success",
    "reference_backdoor_success", "seconds",
)


class Setting(NamedTuple):
    """What the defences of one comparison share: dataset, partition (with its α), attack, fraction."""

    dataset: str
    partition: str
    alpha: float | None
    attack: str
    malicious_fraction: float


@dataclass(frozen=True)
class StatusRecord:
    """The verdict on one hospital's model in one round."""

    round_number: int
    hospital: str
    malicious: bool
    status: str


@dataclass(frozen=True)
class Cell:
    """One finished federation run of the matrix; a measure it did not produce is None."""

    dataset: str
    partition: str
    alpha: float | None
    attack: str
    defence: str
    malicious_fraction: float
    seed: int
    rounds: int | None
    final_accuracy: float | None
    reference_accuracy: float | None
    clean_accuracy: float | None
    poisoned_accepted: int | None
    poisoned_total: int | None
    honest_rejected: int | None
    honest_total: int | None
    backdoor_success: float | None
    # The same trigger's success on the reference federation (what rejecting exactly the
    # attackers ends with); None for an attack without a trigger and in cells written before it
    # was measured.
    reference_backdoor_success: float | None
    statuses: tuple[StatusRecord, ...]

    @property
    def setting(self) -> Setting:
        return Setting(self.dataset, self.partition, self.alpha, self.attack, self.malicious_fraction)


@dataclass(frozen=True)
class Evaluation:
    """A results.json read and checked: its matrix as written and its cells."""

    matrix: Mapping[str, Any]
    cells: tuple[Cell, ...]
    failed: tuple[str, ...] = ()  # one line per cell whose federation failed (run again on resume)

    @property
    def expected_cells(self) -> int | None:
        """How many cells the full matrix has, or None when the matrix does not say."""
        total = 1
        for key in ("datasets", "partitions", "attacks", "defences", "malicious_fractions", "seeds"):
            values = self.matrix.get(key)
            if not isinstance(values, list):
                return None
            total *= len(values)
        return total

    def ordered(self, field: str, values: Iterable[Any]) -> list[Any]:
        """The distinct `values` in the matrix's order for `field` (datasets, attacks, ...), those
        the matrix does not list after them in the order first seen."""
        listed = self.matrix.get(field)
        rank = {value: i for i, value in enumerate(listed)} if isinstance(listed, list) else {}
        seen = list(dict.fromkeys(values))
        return sorted(seen, key=lambda value: (rank.get(value, len(rank)), seen.index(value)))

    def settings(self, cells: Iterable[Cell] | None = None) -> list[Setting]:
        """The distinct settings of `cells` (default: all), in the matrix's order."""
        chosen = list(self.cells if cells is None else cells)
        datasets = self.ordered("datasets", (c.dataset for c in chosen))
        partitions = [
            (partition, alpha)
            for partition in self.ordered("partitions", (c.partition for c in chosen))
            for alpha in sorted({c.alpha for c in chosen if c.partition == partition}, key=lambda a: a or 0.0)
        ]
        attacks = self.ordered("attacks", (c.attack for c in chosen))
        fractions = self.ordered("malicious_fractions", (c.malicious_fraction for c in chosen))
        present = {c.setting for c in chosen}
        return [
            Setting(dataset, partition, alpha, attack, fraction)
            for dataset in datasets
            for partition, alpha in partitions
            for fraction in fractions
            for attack in attacks
            if Setting(dataset, partition, alpha, attack, fraction) in present
        ]

    def defences(self, cells: Iterable[Cell] | None = None) -> list[str]:
        """The distinct defences of `cells` (default: all), in the matrix's order."""
        return self.ordered("defences", (c.defence for c in (self.cells if cells is None else cells)))


def read_evaluation(results: Mapping[str, Any]) -> Evaluation:
    """Checks a results dict (results.json as loaded) and reads its cells.

    Raises ConfigError naming the cell and field when the format is not FORMAT or a cell is
    malformed, so a report never silently shows numbers it misread."""
    if not isinstance(results, Mapping):
        raise ConfigError("The evaluation results are not a JSON object.")
    if results.get("format") != FORMAT:
        raise ConfigError(
            f"These are not MedFedChain evaluation results of format '{FORMAT}' "
            f"(the file says {results.get('format')!r})."
        )
    matrix = results.get("matrix") or {}
    if not isinstance(matrix, Mapping):
        raise ConfigError("The evaluation results' 'matrix' is not a JSON object.")
    cells = results.get("cells", [])
    if not isinstance(cells, list):
        raise ConfigError("The evaluation results' 'cells' is not a list.")
    failed = tuple(
        f"{raw.get('dataset')}, {raw.get('partition')}, {raw.get('attack')}, {raw.get('defence')}, seed "
        f"{raw.get('seed')}: {raw['error']}"
        for raw in cells if isinstance(raw, Mapping) and raw.get("error"))
    read = tuple(_cell(raw, index) for index, raw in enumerate(cells)
                 if not (isinstance(raw, Mapping) and raw.get("error")))
    seen: dict[tuple[Setting, str, int], int] = {}
    for index, cell in enumerate(read):
        first = seen.setdefault((cell.setting, cell.defence, cell.seed), index)
        if first != index:
            raise ConfigError(
                f"The evaluation results list one run twice: cells {first + 1} and {index + 1} are both "
                f"{cell.dataset}, {cell.partition}, {cell.attack}, {cell.defence}, "
                f"{cell.malicious_fraction:.0%} malicious, seed {cell.seed}."
            )
    return Evaluation(matrix=matrix, cells=read, failed=failed)


def _cell(raw: Any, index: int) -> Cell:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Cell {index + 1} of the evaluation results is not a JSON object.")
    field = _Fields(raw, index)
    partition = field.text("partition")
    return Cell(
        dataset=field.text("dataset"),
        partition=partition,
        alpha=field.number("alpha") if partition != "iid" else None,
        attack=field.text("attack"),
        defence=field.text("defence"),
        malicious_fraction=field.required_number("malicious_fraction"),
        seed=field.required_count("seed"),
        rounds=field.count("rounds"),
        final_accuracy=field.number("final_accuracy"),
        reference_accuracy=field.number("reference_accuracy"),
        clean_accuracy=field.number("clean_accuracy"),
        poisoned_accepted=field.count("poisoned_accepted"),
        poisoned_total=field.count("poisoned_total"),
        honest_rejected=field.count("honest_rejected"),
        honest_total=field.count("honest_total"),
        backdoor_success=field.number("backdoor_success"),
        reference_backdoor_success=field.number("reference_backdoor_success"),
        statuses=field.statuses(),
    )


class _Fields:
    """Typed access to one raw cell; each error names the cell and the field."""

    def __init__(self, raw: Mapping[str, Any], index: int) -> None:
        self.raw = raw
        self.index = index

    def _bad(self, key: str, expected: str, found: Any = None) -> ConfigError:
        where = f"cell {self.index + 1} ({self.raw.get('dataset')}, {self.raw.get('attack')}, " \
                f"{self.raw.get('defence')}, seed {self.raw.get('seed')})"
        return ConfigError(
            f"The evaluation results are malformed: in {where}, '{key}' should be {expected}.",
            detail=f"found {self.raw.get(key) if found is None else found!r}",
        )

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        if not isinstance(value, str) or not value:
            raise self._bad(key, "a non-empty string")
        return value

    def number(self, key: str) -> float | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, "a number or null")
        return float(value)

    def required_number(self, key: str) -> float:
        value = self.number(key)
        if value is None:
            raise self._bad(key, "a number")
        return value

    def count(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._bad(key, "a whole number ≥ 0 or null")
        return value

    def required_count(self, key: str) -> int:
        value = self.count(key)
        if value is None:
            raise self._bad(key, "a whole number ≥ 0")
        return value

    def statuses(self) -> tuple[StatusRecord, ...]:
        raw = self.raw.get("statuses") or []
        if not isinstance(raw, Sequence) or isinstance(raw, str):
            raise self._bad("statuses", "a list")
        records = []
        for entry in raw:
            if not isinstance(entry, Mapping):
                raise self._bad("statuses", "a list of objects", entry)
            round_number, hospital = entry.get("round"), entry.get("hospital")
            status = entry.get("status")
            if isinstance(round_number, bool) or not isinstance(round_number, int) or round_number < 1:
                raise self._bad("statuses", "a list whose 'round' are whole numbers ≥ 1", entry)
            if not isinstance(hospital, str) or not hospital:
                raise self._bad("statuses", "a list whose 'hospital' are non-empty strings", entry)
            if status not in STATUSES:
                raise self._bad("statuses", f"a list whose 'status' is one of {', '.join(STATUSES)}", entry)
            records.append(StatusRecord(round_number, hospital, bool(entry.get("malicious")), status))
        return tuple(records)
