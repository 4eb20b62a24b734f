"""Settings: precedence (arguments > environment > settings.json > defaults), refusal of unknown
keys, the home directory, and the atomic save used by the Settings page."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.federation.policy import VerificationPolicy
from core.settings import load_settings, save_settings, update_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.upper().startswith("MEDFED_"):
            monkeypatch.delenv(key)
    # platformdirs follows XDG on Linux: keep the default home inside the test's folder.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def write_file(home: Path, values: dict[str, object]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "settings.json").write_text(json.dumps(values), encoding="utf-8")


def test_defaults_derive_every_path_from_home(tmp_path: Path) -> None:
    home = tmp_path / "home"

    settings = load_settings(home=home)

    assert home.is_dir()  # created on first use
    assert settings.home == home
    assert settings.db_path == home / "medfedchain.db"
    assert settings.keystore_dir == home / "keystore"
    assert settings.blob_dir == home / "blobs"
    assert settings.tls_dir == home / "tls"
    assert settings.rpc_url is None
    assert settings.smpc_protocol == "securenn"
    assert settings.policy == VerificationPolicy()
    assert settings.hospital_name


def test_default_home_is_the_platform_user_data_dir(tmp_path: Path) -> None:
    settings = load_settings()

    assert settings.home == tmp_path / "xdg" / "MedFedChain"
    assert settings.home.is_dir()


def test_medfed_home_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "from-env"
    write_file(home, {"hospital_name": "Env Hospital"})
    monkeypatch.setenv("MEDFED_HOME", str(home))

    settings = load_settings()

    assert settings.home == home
    assert settings.db_path == home / "medfedchain.db"
    assert settings.hospital_name == "Env Hospital"  # the file of that home was read


def test_precedence_arguments_over_env_over_file_over_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    write_file(
        home,
        {
            "smpc_protocol": "aby3",
            "rpc_url": "http://file:8545",
            "hospital_name": "File Hospital",
            "policy": {"max_norm_ratio": 5.0, "min_cosine": 0.1},
        },
    )
    monkeypatch.setenv("MEDFED_RPC_URL", "http://env:8545")
    monkeypatch.setenv("MEDFED_HOSPITAL_NAME", "Env Hospital")
    monkeypatch.setenv("MEDFED_POLICY__MIN_COSINE", "0.2")

    settings = load_settings(home=home, db=tmp_path / "cli.db", hospital_name="CLI Hospital")

    assert settings.db_path == tmp_path / "cli.db"  # argument
    assert settings.hospital_name == "CLI Hospital"  # argument beats env and file
    assert settings.rpc_url == "http://env:8545"  # env beats file
    assert settings.smpc_protocol == "aby3"  # file beats default
    assert settings.policy == VerificationPolicy(max_accuracy_drop=0.1, min_cosine=0.2, max_norm_ratio=5.0)
    assert settings.keystore_dir == home / "keystore"  # default


def test_home_argument_beats_medfed_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDFED_HOME", str(tmp_path / "env-home"))

    settings = load_settings(home=tmp_path / "cli-home")

    assert settings.home == tmp_path / "cli-home"
    assert not (tmp_path / "env-home").exists()


def test_relative_paths_in_the_file_are_relative_to_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_file(home, {"db_path": "data/state.db", "blob_dir": "models"})

    settings = load_settings(home=home)

    assert settings.db_path == home / "data" / "state.db"
    assert settings.blob_dir == home / "models"


def test_the_obsolete_players_file_setting_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    write_file(home, {"smpc_players": "players.json", "hospital_name": "Old Install"})

    with caplog.at_level(logging.WARNING, logger="core.settings"):
        settings = load_settings(home=home)

    assert settings.hospital_name == "Old Install"  # the rest of the file still applies
    assert not hasattr(settings, "smpc_players")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'smpc_players'" in warnings[0] and "obsolete" in warnings[0]
    assert "\n" not in warnings[0] and str(home / "settings.json") in warnings[0]
    save_settings(settings)  # the next save writes the file without it
    assert "smpc_players" not in json.loads(settings.settings_file.read_text())


def test_the_obsolete_players_file_variable_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MEDFED_SMPC_PLAYERS", str(tmp_path / "players.json"))

    with caplog.at_level(logging.WARNING, logger="core.settings"):
        load_settings(home=tmp_path / "home")

    assert any("MEDFED_SMPC_PLAYERS" in r.getMessage() and "obsolete" in r.getMessage() for r in caplog.records)


def test_the_players_file_is_no_longer_a_setting_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown setting 'smpc_players'"):
        load_settings(home=tmp_path / "home", smpc_players=tmp_path / "players.json")


def test_unknown_key_in_the_file_is_refused_by_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_file(home, {"db_pth": "typo.db"})

    with pytest.raises(ConfigError, match="Unknown setting 'db_pth'") as info:
        load_settings(home=home)
    assert str(home / "settings.json") in info.value.user_message


def test_unknown_policy_key_in_the_file_is_refused_by_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_file(home, {"policy": {"max_acc_drop": 0.2}})

    with pytest.raises(ConfigError, match="policy.max_acc_drop"):
        load_settings(home=home)


def test_unknown_override_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Unknown setting 'rpc'"):
        load_settings(home=tmp_path, rpc="http://x")


def test_home_inside_the_file_is_refused(tmp_path: Path) -> None:
    write_file(tmp_path, {"home": "/elsewhere"})

    with pytest.raises(ConfigError, match="cannot set 'home'"):
        load_settings(home=tmp_path)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"smpc_protocol": "rot13"}, "smpc_protocol"),
        ({"rpc_url": "ftp://node"}, "rpc_url"),
        ({"policy": {"min_cosine": 3.0}}, "policy"),
        ({"hospital_name": "   "}, "hospital_name"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, values: dict[str, object], key: str) -> None:
    write_file(tmp_path, values)

    with pytest.raises(ConfigError, match=f"Invalid setting '{key}"):
        load_settings(home=tmp_path)


@pytest.mark.parametrize("url", ["ftp://x", "notaurl", "ws://node:8546", "http://node:port", "http://"])
def test_a_node_url_is_refused_alike_in_the_file_and_as_an_argument(tmp_path: Path, url: str) -> None:
    from core.services.simulation import SimulationConfig

    write_file(tmp_path, {"rpc_url": url})
    with pytest.raises(ConfigError) as from_file:
        load_settings(home=tmp_path)
    with pytest.raises(ConfigError) as from_argument:  # the CLI's --rpc and the GUI's run
        SimulationConfig(rpc_url=url)

    reason = "expected the node's http:// or https:// URL"
    assert reason in from_file.value.user_message and reason in from_argument.value.user_message
    assert f"'{url}'" in from_argument.value.user_message


def test_a_node_url_is_kept_when_usable(tmp_path: Path) -> None:
    from core.services.simulation import SimulationConfig

    write_file(tmp_path, {"rpc_url": " http://ledger:8545 "})
    assert load_settings(home=tmp_path).rpc_url == "http://ledger:8545"
    assert SimulationConfig(rpc_url="https://ledger.example").rpc_url == "https://ledger.example"
    assert SimulationConfig(rpc_url="").rpc_url is None


def test_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text("{not json", encoding="utf-8")

    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(home=tmp_path)


def test_save_then_load_round_trips_and_writes_only_changes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(home=home)
    changed = update_settings(
        settings,
        hospital_name="St. Anna",
        rpc_url="http://node:8545",
        policy=VerificationPolicy(max_accuracy_drop=0.05, min_cosine=0.2, max_norm_ratio=2.0),
    )

    path = save_settings(changed)

    assert path == home / "settings.json"
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert "home" not in stored and "db_path" not in stored  # derived paths follow the home
    assert list(home.glob(".settings-*")) == []  # no temporary file left behind
    reloaded = load_settings(home=home)
    assert reloaded == changed


def test_save_keeps_the_previous_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    original = update_settings(load_settings(home=home), hospital_name="Before")
    save_settings(original)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("core.settings.os.replace", broken_replace)
    with pytest.raises(ConfigError, match="could not be saved"):
        save_settings(update_settings(original, hospital_name="After"))
    monkeypatch.undo()

    assert load_settings(home=home).hospital_name == "Before"
    assert list(home.glob(".settings-*")) == []


def test_update_settings_validates(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)

    with pytest.raises(ConfigError, match="smpc_protocol"):
        update_settings(settings, smpc_protocol="nope")


def test_other_parts_medfed_variables_are_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDFED_KEYSTORE_PASSWORD", "secret")  # read by the ledger's keystore
    monkeypatch.setenv("MEDFED_POLICY__MAX_NORM_RATIO", "4")

    settings = load_settings(home=tmp_path)

    assert settings.policy.max_norm_ratio == 4.0
    assert "secret" not in settings.model_dump_json()


def test_unknown_nested_policy_variable_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDFED_POLICY__MIN_COSIN", "0.3")

    with pytest.raises(ConfigError, match="policy.min_cosin"):
        load_settings(home=tmp_path)
