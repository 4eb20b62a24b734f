"""Poisoning attacks a simulated hospital can mount, and the registry that names them."""

from core.attacks.alie import ALIEAttack
from core.attacks.backdoor import BackdoorAttack
from core.attacks.base import Attack, AttackContext, MeasurableBackdoor
from core.attacks.constrain_scale import ConstrainScaleAttack
from core.attacks.ipm import IPMAttack
from core.attacks.label_flip import LabelFlipAttack
from core.attacks.min_max import MinMaxAttack
from core.attacks.min_sum import MinSumAttack
from core.attacks.noise import NoiseAttack
from core.attacks.registry import ATTACKS, attack_names, create_attack, resolve_attack
from core.attacks.scaling import ScalingAttack
from core.attacks.sign_flip import SignFlipAttack

__all__ = [
    "ATTACKS",
    "ALIEAttack",
    "Attack",
    "AttackContext",
    "BackdoorAttack",
    "ConstrainScaleAttack",
    "IPMAttack",
    "LabelFlipAttack",
    "MeasurableBackdoor",
    "MinMaxAttack",
    "MinSumAttack",
    "NoiseAttack",
    "ScalingAttack",
    "SignFlipAttack",
    "attack_names",
    "create_attack",
    "resolve_attack",
]
