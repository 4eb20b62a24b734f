"""The root of every error that `core` raises, each with a message an IT person can act on."""

from __future__ import annotations


def describe_error(exc: BaseException) -> str:
    """The message to show for an error from any layer: its `user_message` when it has one
    (every package's root error does), else its type and text."""
    message = getattr(exc, "user_message", None)
    return message if isinstance(message, str) and message else f"{type(exc).__name__}: {exc}"


class CoreError(Exception):
    """Base of every domain error; `user_message` is what the GUI and CLI show."""

    exit_code = 2

    def __init__(self, user_message: str, *, detail: str | None = None) -> None:
        super().__init__(user_message if detail is None else f"{user_message} ({detail})")
        self.user_message = user_message
        self.detail = detail


class ServiceAway(Exception):
    """Marks an error as a service briefly away (an SMPC player restarting, say): a role tries the
    step again until its deadline instead of counting it as a failure of its own."""


class DataError(CoreError):
    """A dataset could not be read or is not usable for training."""

    exit_code = 3

    def __init__(self, user_message: str, *, path: str | None = None, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.path = path


class ModelError(CoreError):
    """A model or its weights are unusable (wrong shapes, NaN values, unknown architecture)."""

    exit_code = 4


class ConfigError(CoreError):
    """A setting or command-line argument is invalid."""

    exit_code = 2


class FederationError(CoreError):
    """A round could not proceed (no hospitals left, recorder refused, ...)."""

    exit_code = 5


class RoundAborted(FederationError):
    """A round was stopped before it finalised; nothing of it was applied to the global model."""

    exit_code = 6

    def __init__(self, user_message: str, *, round_number: int, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.round_number = round_number


class Cancelled(CoreError):
    """The user cancelled a long-running operation."""

    exit_code = 130

    def __init__(self, user_message: str = "Cancelled by the user.") -> None:
        super().__init__(user_message)


class StateError(CoreError):
    """The local database is unreadable or out of date."""

    exit_code = 7


class BlobMismatch(StateError):
    """A model blob's bytes do not hash to the SHA-256 that names them: a file changed on disk,
    a peer serving other bytes, or a model that is not the one a round records."""

    def __init__(self, user_message: str, *, expected: str, actual: str) -> None:
        super().__init__(user_message, detail=f"expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class BlobNotFound(StateError):
    """No model blob with this SHA-256 is stored here (or at the peer asked)."""

    def __init__(self, user_message: str, *, digest: str, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.digest = digest
