"""A share holder's service on the wire: owners put their shares, validators take their scores,
the driver sets up and releases a round, both take the round's weighted sum — each only as the
party it proved to be with its pinned TLS certificate.

The service is served on the player's gateway port (mutual TLS); `RemotePlayer` is the client an
owner or the driver uses. Messages are NumPy archives (no pickles): arrays plus a JSON `meta`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np

from smpc.errors import CommitmentMismatch, PlayerUnavailable, SmpcError
from smpc.layout import RoundLayout
from smpc.player_service import PlayerService, ScoreShares, ScoresNotReleased, SumShare

log = logging.getLogger(__name__)

SERVICE = "/medfedchain.SharePlayer/"
HOSPITAL_METHODS = frozenset({"PutUpdate", "PutValidation", "ScoresFor"})
DRIVER_METHODS = frozenset({"Holdings", "Prepare", "Release"})
PUBLIC_METHODS = frozenset({"SumShare"})  # the weighted sum is public: the driver's and every hospital's

# (gRPC context) -> (party name, role) of the authenticated caller; raises if not pinned
Identify = Callable[[Any], tuple[str, str]]


def pack(meta: dict[str, Any], **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return buffer.getvalue()


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (ValueError, KeyError, OSError) as exc:
        raise SmpcError("An SMPC message cannot be read.", detail=str(exc)) from exc
    if not isinstance(meta, dict):
        raise SmpcError("An SMPC message has no valid header.")
    return meta, arrays


class _Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, kind: str, message: str, extra: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.kind, self.message, self.extra = code, kind, message, extra or {}


class SharePlayerHandler(grpc.GenericRpcHandler):
    """Routes `SharePlayer` calls to a `PlayerService` after checking who calls."""

    def __init__(self, player: PlayerService | None, identify: Identify) -> None:
        self.player = player  # set once the player's TensorFlow server runs; calls before are refused
        self.identify = identify

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:  # type: ignore[override]
        method = handler_call_details.method
        if not method.startswith(SERVICE):
            return None
        name = method[len(SERVICE):]
        if name not in HOSPITAL_METHODS | DRIVER_METHODS | PUBLIC_METHODS:
            return None
        return grpc.unary_unary_rpc_method_handler(lambda request, context: self._call(name, request, context))

    def _call(self, method: str, request: bytes, context: Any) -> bytes:
        try:
            try:
                party, role = self.identify(context)
            except SmpcError as exc:
                raise _Refusal(grpc.StatusCode.PERMISSION_DENIED, "denied", exc.user_message) from exc
            if method in DRIVER_METHODS and role != "driver":
                raise _Refusal(grpc.StatusCode.PERMISSION_DENIED, "denied",
                               f"Only the SMPC driver may call {method}; '{party}' may not.")
            if method in PUBLIC_METHODS and role not in ("hospital", "driver"):
                raise _Refusal(grpc.StatusCode.PERMISSION_DENIED, "denied",
                               f"Only the driver and the hospitals may call {method}; '{party}' may not.")
            if method in HOSPITAL_METHODS and role != "hospital":
                raise _Refusal(grpc.StatusCode.PERMISSION_DENIED, "denied",
                               f"Only a hospital may call {method}; '{party}' is a {role}.")
            meta, arrays = unpack(request)
            return self._dispatch(method, party, meta, arrays)
        except _Refusal as refusal:
            self._abort(context, refusal)
        except ScoresNotReleased as exc:
            self._abort(context, _Refusal(grpc.StatusCode.FAILED_PRECONDITION, "pending", exc.user_message))
        except CommitmentMismatch as exc:
            self._abort(context, _Refusal(grpc.StatusCode.ABORTED, "commitment", exc.user_message,
                                          {"hospital": exc.hospital_id, "player": exc.player}))
        except SmpcError as exc:
            self._abort(context, _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "smpc", exc.user_message,
                                          {"detail": exc.detail}))
        except Exception as exc:  # noqa: BLE001 - an unexpected failure answers the caller, the player goes on
            log.exception("SMPC player service failed in %s", method)
            self._abort(context, _Refusal(grpc.StatusCode.INTERNAL, "smpc", f"The SMPC player failed: {exc}"))
        raise AssertionError("unreachable")

    @staticmethod
    def _abort(context: Any, refusal: _Refusal) -> None:
        context.abort(refusal.code, json.dumps({"kind": refusal.kind, "message": refusal.message, **refusal.extra}))

    def _dispatch(self, method: str, party: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
        s = self.player
        if s is None:
            raise _Refusal(grpc.StatusCode.UNAVAILABLE, "smpc", "The SMPC player is still starting.")
        n, attempt = int(meta.get("round", -1)), int(meta.get("attempt", -1))
        if method == "PutUpdate":  # the caller's own update only: the id is the certificate's
            tensors = [arrays[f"t{i}"] for i in range(int(meta["tensors"]))]
            s.put_update(party, n, attempt, tensors, arrays["salt"].tobytes())
            return pack({})
        if method == "PutValidation":
            s.put_validation(party, n, attempt, arrays["x"], arrays["onehot"], arrays["ref"])
            return pack({})
        if method == "ScoresFor":  # the caller's own scores only
            shares = s.scores_for(party, n, attempt)
            return pack({"candidates": list(shares.candidates)}, rows=shares.rows)
        if method == "Holdings":
            updates, rows = s.holdings(n, attempt)
            return pack({"updates": updates, "rows": rows})
        if method == "Prepare":
            s.prepare(RoundLayout.from_json(str(meta["layout"])))
            return pack({})
        if method == "Release":
            s.release(n, attempt)
            return pack({})
        if method == "SumShare":
            total = s.sum_share(n)
            return pack({"contributors": list(total.contributors), "counts": list(total.counts),
                         "tensors": len(total.tensors)}, **{f"t{i}": t for i, t in enumerate(total.tensors)})
        raise _Refusal(grpc.StatusCode.UNIMPLEMENTED, "smpc", f"Unknown method {method}.")


class RemotePlayer:
    """A share holder reached over its gateway: the owner's `PlayerLink` and the driver's
    `HolderControl`, the remote side enforcing who may ask what."""

    def __init__(self, name: str, channel: grpc.Channel, *, timeout_s: float = 60.0) -> None:
        self.name = name
        self._channel = channel
        self.timeout_s = timeout_s
        self.sent = 0  # payload bytes, for the benchmark
        self.received = 0

    def _call(self, method: str, meta: dict[str, Any], **arrays: np.ndarray) -> tuple[dict, dict]:
        stub = self._channel.unary_unary(SERVICE + method)
        request = pack(meta, **arrays)
        try:
            response = stub(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise self._translate(exc) from exc
        self.sent += len(request)
        self.received += len(response)
        return unpack(response)

    def _translate(self, exc: grpc.RpcError) -> Exception:
        code = exc.code() if hasattr(exc, "code") else None
        try:
            body = json.loads(exc.details() or "{}")
        except (TypeError, ValueError):
            body = {}
        message = body.get("message") if isinstance(body, dict) else None
        kind = body.get("kind") if isinstance(body, dict) else None
        if kind == "pending":
            return ScoresNotReleased(message or "The scores are not ready yet.")
        if kind == "commitment":
            return CommitmentMismatch(message or "A share does not match its commitment.",
                                      hospital_id=str(body.get("hospital")), player=body.get("player"))
        if kind in ("smpc", "denied"):
            return SmpcError(message or "The SMPC player refused the request.",
                             detail=f"{self.name}: {code.name if code else ''}")
        return PlayerUnavailable(f"SMPC player {self.name} could not be reached.", player=self.name,
                                 detail=f"{code.name if code else ''}: {exc.details() if hasattr(exc, 'details') else exc}")

    # -- owner ----------------------------------------------------------------------------------

    def put_update(self, hospital_id: str, round_number: int, attempt: int, tensors: Sequence[np.ndarray],
                   salt: bytes) -> None:
        arrays = {f"t{i}": np.asarray(t, np.int64) for i, t in enumerate(tensors)}
        self._call("PutUpdate", {"round": round_number, "attempt": attempt, "tensors": len(tensors)},
                   salt=np.frombuffer(salt, np.uint8), **arrays)

    def put_validation(self, hospital_id: str, round_number: int, attempt: int, x: np.ndarray,
                       onehot: np.ndarray, ref: np.ndarray) -> None:
        self._call("PutValidation", {"round": round_number, "attempt": attempt}, x=x, onehot=onehot, ref=ref)

    def scores_for(self, validator: str, round_number: int, attempt: int) -> ScoreShares:
        meta, arrays = self._call("ScoresFor", {"round": round_number, "attempt": attempt})
        return ScoreShares(tuple(meta["candidates"]), arrays["rows"])

    # -- driver ---------------------------------------------------------------------------------

    def holdings(self, round_number: int, attempt: int) -> tuple[list[str], dict[str, int]]:
        meta, _ = self._call("Holdings", {"round": round_number, "attempt": attempt})
        return list(meta["updates"]), {str(k): int(v) for k, v in meta["rows"].items()}

    def prepare(self, layout: RoundLayout) -> None:
        self._call("Prepare", {"layout": layout.to_json()})

    def release(self, round_number: int, attempt: int) -> None:
        self._call("Release", {"round": round_number, "attempt": attempt})

    def sum_share(self, round_number: int) -> SumShare:
        meta, arrays = self._call("SumShare", {"round": round_number})
        return SumShare(tuple(meta["contributors"]), tuple(int(c) for c in meta["counts"]),
                        tuple(arrays[f"t{i}"] for i in range(int(meta["tensors"]))))

    def close(self) -> None:
        log.info("SharePlayer traffic with %s: sent %d bytes, received %d bytes", self.name, self.sent, self.received)
        self._channel.close()
