"""Poisoning attacks a simulated hospital can mount, and the registry that names them."""

from core.attacks.backdoor import BackdoorAttack
from core.attacks.base import Attack, AttackContext
from core.attacks.label_flip import LabelFlipAttack
from core.attacks.noise import NoiseAttack
from core.attacks.registry import ATTACKS, attack_names, create_attack, resolve_attack
from core.attacks.scaling import ScalingAttack
from core.attacks.sign_flip import SignFlipAttack

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackContext",
    "BackdoorAttack",
    "LabelFlipAttack",
    "NoiseAttack",
    "ScalingAttack",
    "SignFlipAttack",
    "attack_names",
    "create_attack",
    "resolve_attack",
]
