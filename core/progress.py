"""Typed progress reports and cooperative cancellation for long-running work.

Long work in `core` takes a `ProgressSink` (any callable) and a `CancelToken`; the GUI feeds the
reports into widgets from a worker thread, the CLI prints them. Nothing here knows of Qt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from core.errors import Cancelled


class Stage(str, Enum):
    LOADING = "loading"
    TRAINING = "training"
    COMMITMENT = "commitment"
    VERIFICATION = "verification"
    VOTING = "voting"
    AGGREGATION = "aggregation"
    RECORDING = "recording"
    EVALUATION = "evaluation"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Progress:
    """One step of work: `fraction` in [0, 1] when known; `values` carries numbers to plot."""

    stage: Stage
    message: str
    fraction: float | None = None
    round_number: int | None = None
    hospital_id: str | None = None
    values: dict[str, float] = field(default_factory=dict)


ProgressSink = Callable[[Progress], None]


def ignore_progress(_: Progress) -> None:
    """The sink for callers that do not watch progress."""


class CancelToken:
    """Set from any thread; checked by the worker between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleeps up to `seconds`, waking at once when cancelled; True if cancelled."""
        return self._event.wait(seconds)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()
