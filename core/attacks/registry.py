"""Attacks by name: the built-in ones, or a researcher's own `Attack` subclass loaded from a
Python file given as `path/to/file.py:ClassName`, so new attacks need no change to the app."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
from pathlib import Path
from typing import Any

from core.attacks.alie import ALIEAttack
from core.attacks.backdoor import BackdoorAttack
from core.attacks.base import Attack
from core.attacks.constrain_scale import ConstrainScaleAttack
from core.attacks.ipm import IPMAttack
from core.attacks.label_flip import LabelFlipAttack
from core.attacks.min_max import MinMaxAttack
from core.attacks.min_sum import MinSumAttack
from core.attacks.noise import NoiseAttack
from core.attacks.scaling import ScalingAttack
from core.attacks.sign_flip import SignFlipAttack
from core.errors import ConfigError, CoreError

log = logging.getLogger(__name__)

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (
        LabelFlipAttack, SignFlipAttack, ScalingAttack, NoiseAttack, BackdoorAttack,
        # adaptive: computed from the round's benign updates, tailored to pass the validators
        ALIEAttack, MinMaxAttack, MinSumAttack, IPMAttack, ConstrainScaleAttack,
    )
}


def attack_names() -> list[str]:
    """The built-in attacks' names, sorted."""
    return sorted(ATTACKS)


def _split_file_spec(spec: str) -> tuple[Path, str] | None:
    # rpartition keeps Windows drive letters ("C:\\attacks\\mine.py:Mine") in the path.
    path, sep, class_name = spec.rpartition(":")
    if not sep or not path.endswith(".py"):
        return None
    return Path(path).expanduser(), class_name.strip()


def load_attack_class(path: Path, class_name: str) -> type[Attack]:
    """Imports `path` as a fresh module and returns its `class_name`, an `Attack` subclass."""
    if not class_name.isidentifier():
        raise ConfigError(f"'{class_name}' is not a valid class name in attack spec for {path}.")
    if not path.is_file():
        raise ConfigError(f"The attack file {path} does not exist.")
    resolved = path.resolve()
    # A name unique per file, so two user files both called attack.py do not collide.
    module_name = "medfedchain_user_attack_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"The attack file {path} cannot be imported as Python.")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running so that dataclasses and pickling inside the file work.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(
            f"The attack file {path} has a syntax error on line {exc.lineno}.", detail=exc.msg
        ) from exc
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(
            f"The attack file {path} failed while loading.", detail=f"{type(exc).__name__}: {exc}"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        available = sorted(
            n
            for n, v in vars(module).items()
            if inspect.isclass(v) and issubclass(v, Attack) and v is not Attack
        )
        hint = (
            f" Attack classes in it: {', '.join(available)}." if available else " It defines no Attack class."
        )
        raise ConfigError(f"The attack file {path} has no class '{class_name}'.{hint}")
    if not (inspect.isclass(cls) and issubclass(cls, Attack)):
        raise ConfigError(
            f"'{class_name}' in {path} is not an attack: it must be a subclass of core.attacks.base.Attack."
        )
    if inspect.isabstract(cls):
        raise ConfigError(f"'{class_name}' in {path} is abstract and cannot be used as an attack.")
    log.info("Loaded attack %s from %s", class_name, resolved)
    return cls


def resolve_attack(spec: str) -> type[Attack]:
    """The attack class a spec names: a built-in name or `path/to/file.py:ClassName`."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"An attack must be named; choose one of {', '.join(attack_names())}.")
    spec = spec.strip()
    if spec in ATTACKS:
        return ATTACKS[spec]
    file_spec = _split_file_spec(spec)
    if file_spec is None:
        raise ConfigError(
            f"Unknown attack '{spec}'. Choose one of {', '.join(attack_names())}, "
            "or give your own as path/to/file.py:ClassName."
        )
    return load_attack_class(*file_spec)


def create_attack(spec: str, **params: Any) -> Attack:
    """Builds the attack a spec names with the given constructor parameters."""
    cls = resolve_attack(spec)
    signature = inspect.signature(cls)
    try:
        signature.bind(**params)
    except TypeError as exc:
        accepted = [
            p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        raise ConfigError(
            f"Wrong parameters for attack '{spec}': {exc}. "
            f"It takes: {', '.join(accepted) if accepted else 'no parameters'}."
        ) from exc
    try:
        attack = cls(**params)
    except CoreError:
        raise
    except Exception as exc:  # a user's attack failing in its constructor
        reason = str(exc) or type(exc).__name__
        raise ConfigError(
            f"Attack '{spec}' could not be created with {params or 'no parameters'}: {reason}",
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    if not isinstance(attack, Attack):  # a user's __new__ could return anything
        raise ConfigError(f"Attack '{spec}' did not construct an Attack.")
    return attack
