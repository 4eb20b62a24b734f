"""The one typed settings object of a MedFedChain installation, and where it is read and saved.

Values come, highest priority first, from the arguments of `load_settings` (the CLI's `--home`,
`--db`, ...), `MEDFED_*` environment variables, the `settings.json` file in the home directory
(written by the GUI's Settings page), and the defaults below. Unknown keys in the file and in the
arguments are refused rather than silently ignored, so a typo never leaves a hospital running with
a setting it did not mean; a setting an older version wrote and this one no longer has
(`OBSOLETE_SETTINGS`) is dropped with a logged warning instead. Other `MEDFED_*` variables (the
keystore password, the anvil binary) belong to other parts and are left alone; nested ones
(`MEDFED_POLICY__MIN_COSINE`) are checked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_serializer,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.errors import ConfigError
from core.federation.policy import VerificationPolicy
from core.files import write_atomic

logger = logging.getLogger(__name__)

APP_NAME = "MedFedChain"
ENV_PREFIX = "MEDFED_"
SETTINGS_FILE = "settings.json"
# The SMPC protocols a hospital can choose; smpc.session builds its sessions from this list.
SMPC_PROTOCOLS = ("securenn", "pond", "aby3")
# Settings older versions wrote that no longer exist: dropped from a settings file (and ignored in
# the environment) with this reason logged, so an existing installation still starts.
OBSOLETE_SETTINGS = {
    "smpc_players": "SMPC players are no longer named by a players file: a simulation runs them in "
                    "process, a deployment takes them from its secure consortium file",
}

# The settings file being read by the current `load_settings` call; a context variable so that
# concurrent loads (GUI thread and a worker) never see each other's file.
_settings_file: ContextVar[Path | None] = ContextVar("medfed_settings_file", default=None)


# The default of the paths that live in the home directory unless set (None also means that);
# typed Any so the fields can be plain `Path` for every reader.
_FROM_HOME: Any = None


def rpc_url_problem(value: str | None) -> str | None:
    """Why `value` cannot be a ledger node's JSON-RPC URL, or None if it can (None and "" mean
    the embedded chain). The one check of the setting, the CLI's --rpc and the GUI's field."""
    if value is None or not value.strip():
        return None
    parts = urlsplit(value.strip())
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected the node's http:// or https:// URL, such as http://ledger:8545"
    return None


def check_rpc_url(value: str | None, *, option: str = "--rpc") -> str | None:
    """`value` stripped (None for the embedded chain); ConfigError naming `option` if it is no node URL."""
    problem = rpc_url_problem(value)
    if problem is not None:
        raise ConfigError(f"Invalid {option} '{value}': {problem}.")
    return value.strip() if value and value.strip() else None


def resolve_home(home: Path | None = None) -> Path:
    """The home directory `load_settings(home)` uses: `home`, else MEDFED_HOME, else the default."""
    return _absolute(home if home is not None else _home_from_env() or default_home())


def default_home() -> Path:
    """The per-user data directory the platform expects (e.g. ~/.local/share/MedFedChain)."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def _default_hospital_name() -> str:
    return socket.gethostname() or "hospital"


# Coerces and checks the policy thresholds before they become a `VerificationPolicy`; built from
# the dataclass so that a threshold added to the policy is configurable without touching this file.
_PolicyFields: type[BaseModel] = create_model(
    "_PolicyFields",
    __config__=ConfigDict(extra="forbid"),
    **{f.name: (float, f.default) for f in dataclass_fields(VerificationPolicy)},  # type: ignore[call-overload]
)


class Settings(BaseSettings):
    """Everything a hospital's installation is configured with; paths are absolute once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    home: Path = Field(default_factory=default_home)
    db_path: Path = _FROM_HOME  # home / "medfedchain.db"
    rpc_url: str | None = None  # None -> the embedded chain
    smpc_protocol: str = "securenn"
    policy: VerificationPolicy = Field(default_factory=VerificationPolicy)
    keystore_dir: Path = _FROM_HOME  # home / "keystore"
    hospital_name: str = Field(default_factory=_default_hospital_name)
    blob_dir: Path = _FROM_HOME  # home / "blobs"
    tls_dir: Path = _FROM_HOME  # home / "tls": this machine's TLS key and certificate (`tls create`)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _JsonFileSource(settings_cls))

    @field_validator("policy", mode="before")
    @classmethod
    def _to_policy(cls, value: Any) -> VerificationPolicy:
        if isinstance(value, VerificationPolicy):
            return value
        if not isinstance(value, dict):
            names = ", ".join(f.name for f in dataclass_fields(VerificationPolicy))
            raise ValueError(f"expected an object with {names}")
        checked = _PolicyFields.model_validate(value)
        try:
            return VerificationPolicy(**checked.model_dump())
        except ConfigError as exc:
            raise ValueError(exc.user_message) from exc

    @field_serializer("policy")
    def _policy_as_dict(self, policy: VerificationPolicy) -> dict[str, float]:
        return policy.as_dict()

    @field_validator("smpc_protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in SMPC_PROTOCOLS:
            raise ValueError(f"unknown SMPC protocol '{value}'; choose one of {', '.join(SMPC_PROTOCOLS)}")
        return value

    @field_validator("rpc_url")
    @classmethod
    def _usable_rpc_url(cls, value: str | None) -> str | None:
        problem = rpc_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.strip() if value and value.strip() else None

    @field_validator("hospital_name")
    @classmethod
    def _non_empty_name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the hospital name cannot be empty")
        return value

    @field_validator("home")
    @classmethod
    def _absolute_path(cls, value: Path) -> Path:
        return _absolute(value)

    @field_validator("db_path", "keystore_dir", "blob_dir", "tls_dir", mode="before")
    @classmethod
    def _derive_from_home(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and value != "":
            return _absolute(Path(value))
        home = info.data.get("home")
        if home is None:  # home itself was invalid; that error is the one to report
            raise ValueError("cannot be derived without a valid home directory")
        return _derived_defaults(home)[info.field_name or ""]

    @property
    def settings_file(self) -> Path:
        return self.home / SETTINGS_FILE


class _JsonFileSource(PydanticBaseSettingsSource):
    """Reads `settings.json` of the home directory; relative paths in it are relative to home."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ returns the whole file at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _settings_file.get()
        if path is None or not path.exists():
            return {}
        values = _read_settings_file(path)
        for name in ("db_path", "keystore_dir", "blob_dir", "tls_dir"):
            raw = values.get(name)
            if isinstance(raw, str) and raw and not Path(raw).expanduser().is_absolute():
                values[name] = str(path.parent / raw)
        return values


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"The settings file {path} cannot be read.", detail=str(exc)) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"The settings file {path} is not valid JSON.", detail=str(exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"The settings file {path} must hold a JSON object of setting names and values.")
    if "home" in data:
        raise ConfigError(
            f"The settings file {path} cannot set 'home': it lives in the home directory. "
            "Use MEDFED_HOME or --home instead."
        )
    for key in OBSOLETE_SETTINGS.keys() & data.keys():
        del data[key]
        logger.warning("Setting '%s' in %s is obsolete and was ignored: %s.", key, path, OBSOLETE_SETTINGS[key])
    known = set(Settings.model_fields)
    for key, value in data.items():
        if key not in known:
            raise ConfigError(
                f"Unknown setting '{key}' in {path}; known settings: {', '.join(sorted(known - {'home'}))}."
            )
        if key == "policy" and isinstance(value, dict):
            policy_keys = {f.name for f in dataclass_fields(VerificationPolicy)}
            for sub in value:
                if sub not in policy_keys:
                    raise ConfigError(
                        f"Unknown setting 'policy.{sub}' in {path}; known policy settings: "
                        f"{', '.join(sorted(policy_keys))}."
                    )
    return data


def _absolute(path: Path) -> Path:
    return Path(path).expanduser().absolute()


def _derived_defaults(home: Path) -> dict[str, Path]:
    return {
        "db_path": home / "medfedchain.db",
        "keystore_dir": home / "keystore",
        "blob_dir": home / "blobs",
        "tls_dir": home / "tls",
    }


def _warn_obsolete_env() -> None:
    for key in os.environ:
        name = key.upper().removeprefix(ENV_PREFIX).lower()
        if key.upper().startswith(ENV_PREFIX) and name in OBSOLETE_SETTINGS:
            logger.warning("The environment variable %s is obsolete and was ignored: %s.", key, OBSOLETE_SETTINGS[name])


def _home_from_env() -> Path | None:
    # pydantic-settings matches env names case-insensitively; do the same for the one read early.
    for key, value in os.environ.items():
        if key.upper() == f"{ENV_PREFIX}HOME" and value.strip():
            return Path(value.strip())
    return None


@contextmanager
def _reading(path: Path | None) -> Iterator[None]:
    token = _settings_file.set(path)
    try:
        yield
    finally:
        _settings_file.reset(token)


def _config_error(exc: ValidationError, source_hint: str) -> ConfigError:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "settings"
    if first["type"] == "extra_forbidden":
        message = f"Unknown setting '{key}' ({source_hint})."
    else:
        reason = str(first["msg"]).removeprefix("Value error, ")
        message = f"Invalid setting '{key}': {reason} ({source_hint})."
    return ConfigError(message, detail=str(exc))


def load_settings(home: Path | None = None, db: Path | None = None, **overrides: Any) -> Settings:
    """Reads the settings: explicit arguments > MEDFED_* environment > home/settings.json > defaults.

    Creates the home directory on first use. Raises ConfigError naming the offending key.
    """
    resolved_home = resolve_home(home)
    try:
        resolved_home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"The home directory {resolved_home} cannot be created.", detail=str(exc)) from exc
    if not resolved_home.is_dir():
        raise ConfigError(f"The home directory {resolved_home} is not a directory.")

    explicit: dict[str, Any] = dict(overrides)
    if "home" in explicit:
        raise ConfigError("Pass the home directory as load_settings(home=...), not as an override.")
    explicit["home"] = resolved_home
    if db is not None:
        explicit["db_path"] = _absolute(db)
    hint = f"arguments, {ENV_PREFIX}* environment variables or {resolved_home / SETTINGS_FILE}"
    _warn_obsolete_env()
    with _reading(resolved_home / SETTINGS_FILE):
        try:
            settings = Settings(**explicit)
        except ValidationError as exc:
            raise _config_error(exc, hint) from exc
    logger.debug("Settings loaded from %s", resolved_home)
    return settings


def settings_file_values(settings: Settings) -> dict[str, Any]:
    """What `save_settings` writes: every value that differs from its default for this home."""
    dumped = settings.model_dump(mode="json", exclude={"home"})
    derived = {name: str(path) for name, path in _derived_defaults(settings.home).items()}
    out: dict[str, Any] = {}
    for name, value in dumped.items():
        if name in derived:
            if value != derived[name]:
                out[name] = value
        elif name == "policy":
            if value != VerificationPolicy().as_dict():
                out[name] = value
        elif name == "hospital_name" or value != Settings.model_fields[name].default:
            out[name] = value
    return out


def save_settings(settings: Settings) -> Path:
    """Writes home/settings.json atomically (temporary file, then rename); returns its path."""
    path = settings.settings_file
    payload = json.dumps(settings_file_values(settings), indent=2, sort_keys=True) + "\n"
    try:
        write_atomic(path, payload)
    except OSError as exc:
        raise ConfigError(f"The settings could not be saved to {path}.", detail=str(exc)) from exc
    logger.info("Settings saved to %s", path)
    return path


def update_settings(settings: Settings, **changes: Any) -> Settings:
    """A copy of `settings` with `changes` applied and validated (the model itself is frozen)."""
    if "home" in changes:
        raise ConfigError("The home directory cannot be changed while running; restart with --home.")
    values = {name: getattr(settings, name) for name in Settings.model_fields}
    values.update(changes)
    hint = "the Settings page"
    with _reading(None):
        try:
            return Settings(**values)
        except ValidationError as exc:
            raise _config_error(exc, hint) from exc
