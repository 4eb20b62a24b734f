from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from core.attacks import ATTACKS, Attack, attack_names, create_attack
from core.attacks.sign_flip import SignFlipAttack
from core.errors import ConfigError

USER_ATTACK = """
    from dataclasses import dataclass

    from core.attacks.base import Attack
    from core.models.weights import scale


    @dataclass
    class Settings:
        factor: float


    class HalfHearted(Attack):
        name = "half_hearted"

        def __init__(self, factor: float = 0.5) -> None:
            self.factor = Settings(factor).factor

        def poison_update(self, ctx):
            return scale(ctx.honest_delta, self.factor)


    class NotAnAttack:
        pass
"""


def write(tmp_path: Path, source: str, name: str = "my_attack.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_every_built_in_attack_is_registered_under_its_name() -> None:
    assert attack_names() == ["alie", "backdoor", "constrain_scale", "ipm", "label_flip", "min_max", "min_sum",
                              "noise", "scaling", "sign_flip"]
    for name, cls in ATTACKS.items():
        attack = create_attack(name)
        assert isinstance(attack, cls) and attack.name == name


def test_built_in_attack_with_parameters() -> None:
    attack = create_attack("sign_flip", factor=2.0, omniscient=True)
    assert isinstance(attack, SignFlipAttack)
    assert (attack.factor, attack.omniscient) == (2.0, True)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"Unknown attack 'flip'.*label_flip"):
        create_attack("flip")


def test_unknown_parameter_names_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match="It takes: factor, omniscient"):
        create_attack("sign_flip", strength=3)


def test_invalid_parameter_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="factor"):
        create_attack("scaling", factor=-2)


def test_user_attack_is_loaded_from_a_file(tmp_path: Path, context) -> None:
    path = write(tmp_path, USER_ATTACK)

    attack = create_attack(f"{path}:HalfHearted", factor=0.25)

    assert isinstance(attack, Attack) and attack.name == "half_hearted"
    ctx = context()
    np.testing.assert_allclose(attack.poison_update(ctx)[0], 0.25 * ctx.honest_delta[0], rtol=1e-6)


def test_two_user_files_of_the_same_name_do_not_collide(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a", USER_ATTACK)
    second = write(tmp_path / "b", USER_ATTACK.replace("HalfHearted", "Other"))

    a = create_attack(f"{first}:HalfHearted")
    b = create_attack(f"{second}:Other")

    assert type(a).__module__ != type(b).__module__


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_attack(f"{tmp_path / 'nope.py'}:Whatever")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "from core.attacks.base import Attack\n\nclass Broken(Attack)\n    pass\n")
    with pytest.raises(ConfigError, match="syntax error on line 3"):
        create_attack(f"{path}:Broken")


def test_error_while_importing_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "import numpy_that_does_not_exist\n")
    with pytest.raises(ConfigError, match="failed while loading") as info:
        create_attack(f"{path}:Anything")
    assert "ModuleNotFoundError" in str(info.value)


def test_missing_class_lists_the_attacks_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, USER_ATTACK)
    with pytest.raises(ConfigError, match=r"no class 'Missing'.*HalfHearted"):
        create_attack(f"{path}:Missing")


def test_class_that_is_not_an_attack(tmp_path: Path) -> None:
    path = write(tmp_path, USER_ATTACK)
    with pytest.raises(ConfigError, match="not an attack"):
        create_attack(f"{path}:NotAnAttack")


def test_user_constructor_failure_becomes_a_config_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        from core.attacks.base import Attack

        class Picky(Attack):
            def __init__(self, level: int = 1) -> None:
                if level > 3:
                    raise ValueError("level too high")
        """,
    )
    assert isinstance(create_attack(f"{path}:Picky", level=2), Attack)
    with pytest.raises(ConfigError, match="could not be created") as info:
        create_attack(f"{path}:Picky", level=9)
    assert "level too high" in info.value.user_message  # what the CLI and the GUI show


@pytest.mark.parametrize("spec", ["", "   ", "file.txt:Attack", "my_attack.py:"])
def test_malformed_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        create_attack(spec)
