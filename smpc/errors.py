"""The root of every error the SMPC layer raises, each with a message an IT person can act on."""

from __future__ import annotations

from core.errors import ModelError, ServiceAway


class SmpcError(Exception):
    """Base of every SMPC error; `user_message` is what the GUI and CLI show."""

    exit_code = 9  # main.py's documented code for an SMPC problem

    def __init__(self, user_message: str, *, detail: str | None = None) -> None:
        super().__init__(user_message if detail is None else f"{user_message} ({detail})")
        self.user_message = user_message
        self.detail = detail


class CompatibilityError(SmpcError):
    """TF-Encrypted could not be made to run on the installed TensorFlow."""


class FixedPointOverflow(SmpcError, ModelError):
    """A value is too large to be represented in the fixed-point ring without wrapping.

    Also a `ModelError`, so the engine treats an out-of-range update as that hospital's failure
    (as it treats NaN weights) instead of aborting the round.
    """

    def __init__(self, user_message: str, *, what: str, max_abs: float, bound: float) -> None:
        super().__init__(user_message, detail=f"{what}: |value| {max_abs:.4g} > bound {bound:.4g}")
        self.what = what
        self.max_abs = max_abs
        self.bound = bound


class PlayerUnavailable(SmpcError, ServiceAway):
    """An SMPC player process could not be reached or stopped answering during a session."""

    def __init__(self, user_message: str, *, player: str | None = None, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.player = player


class CommitmentMismatch(SmpcError):
    """The shares a player holds are not those the hospital committed to."""

    def __init__(self, user_message: str, *, hospital_id: str, player: str | None = None) -> None:
        super().__init__(user_message, detail=f"hospital {hospital_id}, player {player}")
        self.hospital_id = hospital_id
        self.player = player


class ProtocolUnsupported(SmpcError):
    """The chosen SMPC protocol cannot evaluate what was asked of it."""


class UnknownParty(SmpcError):
    """A name or certificate that the consortium file does not pin."""

    def __init__(self, user_message: str, *, party: str | None = None, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.party = party


class GraphRefused(SmpcError):
    """A player's gateway refused a graph partition that is not part of the SMPC protocol."""

    def __init__(self, user_message: str, *, op_types: frozenset[str] = frozenset()) -> None:
        super().__init__(user_message, detail=", ".join(sorted(op_types)) or None)
        self.op_types = op_types


class LoopbackUnavailable(SmpcError):
    """The raw TensorFlow port cannot be confined to loopback on this machine."""


class RawPortExposed(SmpcError):
    """A player's raw, unauthenticated TensorFlow port listens on a non-loopback address."""

    def __init__(self, user_message: str, *, port: int, addresses: tuple[str, ...]) -> None:
        super().__init__(user_message, detail=f"port {port} on {', '.join(addresses)}")
        self.port = port
        self.addresses = addresses
