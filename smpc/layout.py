"""Where a round's shared inputs sit in the players' variables, agreed by the driver and players.

Everything here is public: which candidate occupies which slot, which validators are scored
together (a group of up to `capacity` columns), how many validation rows each brought and so
which batches of the stacked inputs are whose. The driver sends the layout to each share
holder; each builds its own share of the stacked inputs from what the owners sent it, and the
driver's graph only ever names variables and feeds public indices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from smpc.errors import SmpcError


@dataclass(frozen=True)
class ValidatorGroup:
    """Validators scored together: column `c` belongs to `ids[c]`, whose `rows[c]` validation
    rows follow those of the columns before it, batch after batch."""

    ids: tuple[str, ...]
    rows: tuple[int, ...]
    first_batch: int  # index of the group's first batch in the stacked inputs
    batches: int


@dataclass(frozen=True)
class RoundLayout:
    round_number: int
    attempt: int
    candidates: tuple[str, ...]  # slot order
    groups: tuple[ValidatorGroup, ...]
    batch_size: int
    capacity: int

    @classmethod
    def plan(
        cls,
        round_number: int,
        attempt: int,
        candidates: list[str] | tuple[str, ...],
        validator_rows: dict[str, int],
        *,
        batch_size: int,
        capacity: int,
    ) -> RoundLayout:
        """Candidates in the order given; validators sorted by id and cut into groups."""
        if batch_size < 1 or capacity < 1:
            raise SmpcError("The SMPC batch size and validator capacity must be positive.")
        ids = sorted(validator_rows)
        groups = []
        first = 0
        for start in range(0, len(ids), capacity):
            members = tuple(ids[start : start + capacity])
            rows = tuple(int(validator_rows[v]) for v in members)
            if any(r < 1 for r in rows):
                raise SmpcError("Every validator needs at least one validation row.", detail=str(rows))
            batches = -(-sum(rows) // batch_size)
            groups.append(ValidatorGroup(members, rows, first, batches))
            first += batches
        return cls(round_number, attempt, tuple(candidates), tuple(groups), batch_size, capacity)

    @property
    def total_batches(self) -> int:
        return sum(g.batches for g in self.groups)

    @property
    def validators(self) -> tuple[str, ...]:
        return tuple(v for g in self.groups for v in g.ids)

    def place(self, validator: str) -> tuple[int, int]:
        """(group index, column) of a validator."""
        for g, group in enumerate(self.groups):
            if validator in group.ids:
                return g, group.ids.index(validator)
        raise SmpcError(f"Hospital {validator} is not a validator of round {self.round_number}.")

    def result_row(self, slot: int, group: int) -> int:
        """Row of the results variable where (candidate slot, validator group) is published."""
        return slot * len(self.groups) + group

    @property
    def result_rows(self) -> int:
        return len(self.candidates) * len(self.groups)

    def to_json(self) -> str:
        return json.dumps({
            "round": self.round_number, "attempt": self.attempt, "candidates": list(self.candidates),
            "groups": [{"ids": list(g.ids), "rows": list(g.rows), "first_batch": g.first_batch,
                        "batches": g.batches} for g in self.groups],
            "batch_size": self.batch_size, "capacity": self.capacity,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RoundLayout:
        try:
            raw = json.loads(text)
            return cls(
                int(raw["round"]), int(raw["attempt"]), tuple(str(c) for c in raw["candidates"]),
                tuple(ValidatorGroup(tuple(g["ids"]), tuple(int(r) for r in g["rows"]),
                                     int(g["first_batch"]), int(g["batches"])) for g in raw["groups"]),
                int(raw["batch_size"]), int(raw["capacity"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SmpcError("A round layout from the SMPC driver cannot be read.", detail=str(exc)) from exc
