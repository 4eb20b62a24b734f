"""Shared test set-up: quiet TensorFlow, offscreen Qt, and no test touching the user's real data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own MEDFED_HOME unless it sets one itself."""
    monkeypatch.setenv("MEDFED_HOME", str(tmp_path_factory.mktemp("medfed-home")))
