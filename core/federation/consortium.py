"""The consortium file: what every site of a federation agrees on, signed by the consortium admin.

As NVFlare's start-up kits, one file tells each site which chain, contract, coordinator, model,
data schema, policy and members make up the federation; unlike them it holds no private key:
each site makes its own account and only addresses and URLs travel. The admin signs the
canonical JSON of everything but the signature; `verify_signature` checks it with a recovery
function the ledger supplies (EIP-191), so this module knows no cryptography of its own.

A secure consortium (format 2) also pins every SMPC party's TLS certificate: the three players,
the driver and each hospital, and its model stores (the hospitals' and the coordinator's, which
presents the driver's certificate) are https:// URLs, served over mutual TLS. Only the PEM
armour and base64 are checked here; the certificates' fingerprints are computed by
`smpc.transport.identity`, called from the services.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.data.dataset import DataKind, Dataset
from core.errors import ConfigError, DataError
from core.federation.aggregators import AGGREGATORS
from core.federation.channel import Member, RoundTiming
from core.federation.policy import VerificationPolicy, recorded_thresholds
from core.files import write_atomic
from core.models.architecture import ARCHITECTURES, LayerSpec, ModelSpec

# Format 2 adds the optional `smpc` section and members' `tls_cert`; a record is written with the
# lowest version that holds it (`Consortium.required_format`), so files without them stay format 1
# and older readers keep reading them, while an older reader shown a secure file names its version.
PLAIN_FORMAT = 1
SECURE_FORMAT = 2
FORMAT_VERSION = SECURE_FORMAT  # the newest this version reads and writes
READABLE_FORMATS = (PLAIN_FORMAT, SECURE_FORMAT)
MAX_HOSPITAL_ID_BYTES = 64  # the contract's bound on a hospital id
SMPC_PLAYERS = ("server0", "server1", "server2")  # the protocol's order of its three players
SMPC_DRIVER = "driver"  # the driver's party name

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX32 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_SIGNATURE = re.compile(r"^(0x)?[0-9a-fA-F]{130}$")
_PEM = re.compile(r"^-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(\[[0-9A-Fa-f:.]+\]|{_LABEL}(\.{_LABEL})*)$")  # a DNS name, IPv4, or [IPv6]

# (canonical message, signature hex) -> the address that signed it
RecoverSigner = Callable[[bytes, str], str]


class ConsortiumError(ConfigError):
    """The consortium file cannot be used."""


class ConsortiumFileInvalid(ConsortiumError):
    """The file is unreadable, not JSON, or does not hold a valid consortium record."""

    def __init__(self, user_message: str, *, path: str, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.path = path


class TlsIdentityError(ConsortiumError):
    """This machine's TLS identity cannot take part in the consortium's SMPC sessions."""

    def __init__(self, user_message: str, *, party: str | None, detail: str | None = None) -> None:
        super().__init__(user_message, detail=detail)
        self.party = party


class TlsIdentityMissing(TlsIdentityError):
    """The data directory has no TLS identity (`tls create` was never run there)."""


class TlsIdentityExists(TlsIdentityError):
    """The data directory already has a TLS identity; it is kept, never replaced."""


class TlsCertificateMismatch(TlsIdentityError):
    """This machine's certificate is not the one the consortium pinned for the party."""

    def __init__(self, user_message: str, *, party: str, expected: str, actual: str) -> None:
        super().__init__(user_message, party=party, detail=f"pinned {expected}, this machine {actual}")
        self.expected = expected
        self.actual = actual


class ConsortiumSignatureInvalid(ConsortiumError):
    """The admin's signature does not cover the file as it is: it was changed after signing."""

    def __init__(self, user_message: str, *, expected: str, recovered: str | None) -> None:
        super().__init__(user_message, detail=f"admin {expected}, signed by {recovered or 'nobody'}")
        self.expected = expected
        self.recovered = recovered


def same_address(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError(f"'{value}' is not an Ethereum address (0x and 40 hex digits)")
    return value


def _url(value: str) -> str:
    value = value.strip()
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"'{value}' is not an http(s):// URL")
    return value.rstrip("/")


def _certificate(value: str) -> str:
    """One PEM certificate, re-wrapped as `cryptography` writes it (64 base64 digits a line)."""
    match = _PEM.match(value.strip())
    if match is None:
        raise ValueError("is not one PEM certificate (-----BEGIN CERTIFICATE----- ... -----END "
                         "CERTIFICATE-----)")
    body = "".join(match.group(1).split())
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not a PEM certificate: its body is not base64") from exc
    if len(der) < 64 or der[0] != 0x30:  # a DER certificate is one ASN.1 SEQUENCE
        raise ValueError("is not a PEM certificate: its body is not a DER certificate")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _host_port(value: str) -> str:
    value = value.strip()
    host, sep, port = value.rpartition(":")
    if not sep or not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{value}' is not host:port (such as player0.example.org:4440)")
    return value


def secure_store_problem(store_url: str, whose: str) -> str | None:
    """Why `store_url` cannot be a model store of a secure consortium, or None: those stores serve
    over mutual TLS, so their URLs are https:// (a plain consortium keeps http:// stores)."""
    if store_url.lower().startswith("https://"):
        return None
    return (f"the consortium is secure, so {whose}'s model store serves over mutual TLS: its URL must be "
            f"https://HOST:PORT, not '{store_url}'")


def require_secure_store(store_url: str, whose: str) -> None:
    """ConsortiumError when `store_url` cannot be a secure consortium's model store."""
    problem = secure_store_problem(store_url, whose)
    if problem is not None:
        raise ConsortiumError(problem[0].upper() + problem[1:] + ".")


def certificate_der(cert_pem: str) -> bytes:
    """The DER bytes of a checked PEM certificate: equal for the same certificate however wrapped."""
    return base64.b64decode("".join(_certificate(cert_pem).splitlines()[1:-1]))


def _pinned_once(certificates: list[tuple[str, str]]) -> None:
    """Refuses one certificate pinned for two parties: the gateways could not tell them apart."""
    pinned: dict[bytes, str] = {}
    for name, cert in certificates:
        der = certificate_der(cert)
        if der in pinned:
            raise ValueError(f"the same TLS certificate is pinned for '{pinned[der]}' and '{name}'; every "
                             "party makes its own with `tls create`")
        pinned[der] = name


Address = Annotated[str, AfterValidator(_address)]
StoreUrl = Annotated[str, AfterValidator(_url)]
Certificate = Annotated[str, AfterValidator(_certificate)]
HostPort = Annotated[str, AfterValidator(_host_port)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def checked(cls, what: str, **values: Any) -> Self:
        """A record built from arguments, its first invalid field refused as a ConsortiumError."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConsortiumError(f"The {what} is not valid: {_first_error(exc)}.", detail=str(exc)) from exc


class ContractEntry(_Record):
    address: Address
    code_hash: str  # keccak-256 of the deployed runtime code, hex

    @field_validator("code_hash")
    @classmethod
    def _hex32(cls, value: str) -> str:
        if not _HEX32.match(value):
            raise ValueError("expected a 32-byte hex digest")
        return value.lower().removeprefix("0x")


class CoordinatorEntry(_Record):
    address: Address
    store_url: StoreUrl


class MemberEntry(_Record):
    """A registered hospital: its own account, its id on the ledger, where its model store answers,
    and (in a secure consortium) the TLS certificate it made with `tls create`."""

    address: Address
    hospital_id: str
    store_url: StoreUrl
    tls_cert: Certificate | None = None

    @field_validator("hospital_id")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value.encode("utf-8")) > MAX_HOSPITAL_ID_BYTES:
            raise ValueError(f"a hospital id needs 1 to {MAX_HOSPITAL_ID_BYTES} bytes")
        return value

    def as_member(self) -> Member:
        return Member(hospital_id=self.hospital_id, account=self.address, store_url=self.store_url)


class PlayerEntry(_Record):
    """One SMPC player: its name in the protocol, where its TLS gateway listens, its certificate."""

    name: str
    address: HostPort
    tls_cert: Certificate


class DriverEntry(_Record):
    """The SMPC driver: the coordinator's process, never a hospital. `consortium init` requires its
    address (the players fetch from its gateway what it feeds); records signed without one load,
    and such a driver refuses to start."""

    tls_cert: Certificate
    address: HostPort | None = None


class SmpcEntry(_Record):
    """The secure consortium's SMPC parties, each pinned to its certificate."""

    protocol: Literal["securenn"] = "securenn"
    players: tuple[PlayerEntry, ...]
    driver: DriverEntry

    @model_validator(mode="after")
    def _protocol_order(self) -> SmpcEntry:
        names = tuple(p.name for p in self.players)
        if names != SMPC_PLAYERS:
            raise ValueError(f"the players must be exactly {', '.join(SMPC_PLAYERS)} in this order, got "
                             f"{', '.join(names) or 'none'}")
        _pinned_once([(p.name, p.tls_cert) for p in self.players] + [(SMPC_DRIVER, self.driver.tls_cert)])
        return self


@dataclass(frozen=True)
class Party:
    """One party of a secure consortium's SMPC sessions, as the gateways pin it."""

    name: str
    role: Literal["player", "driver", "hospital"]
    address: str | None  # host:port of its TLS gateway; None: it only dials out
    tls_cert: str


class LayerEntry(_Record):
    kind: Literal["reshape", "conv2d", "relu", "avg_pool", "flatten", "dense"]
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _json_form(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Held as JSON reads it back (tuples as lists), so a record equals its file."""
        try:
            return dict(json.loads(json.dumps(value)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layer parameters must be plain JSON values: {exc}") from exc


class ModelEntry(_Record):
    """Everything `ModelSpec` holds, so every site builds exactly the same network."""

    architecture: str
    input_shape: tuple[int, ...]
    num_classes: int = Field(ge=2)
    layers: tuple[LayerEntry, ...] = Field(min_length=1)

    @field_validator("architecture")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture '{value}'; expected one of {', '.join(ARCHITECTURES)}")
        return value

    @classmethod
    def of(cls, spec: ModelSpec) -> ModelEntry:
        return cls(
            architecture=spec.architecture,
            input_shape=spec.input_shape,
            num_classes=spec.num_classes,
            layers=tuple(LayerEntry(kind=layer.kind, params=dict(layer.params))  # type: ignore[arg-type]
                         for layer in spec.layers),
        )

    def spec(self) -> ModelSpec:
        return ModelSpec(
            architecture=self.architecture,
            input_shape=tuple(self.input_shape),
            num_classes=self.num_classes,
            layers=tuple(LayerSpec(layer.kind, {k: _tuples(v) for k, v in layer.params.items()})
                         for layer in self.layers),
        )


class InputSchema(_Record):
    """What a hospital's data must look like: kind, per-sample shape, classes (and their names)."""

    kind: DataKind
    input_shape: tuple[int, ...] = Field(min_length=1)
    num_classes: int = Field(ge=2)
    class_names: tuple[str, ...] = ()  # empty: not agreed
    feature_names: tuple[str, ...] = ()  # tables only; empty: not agreed

    @model_validator(mode="after")
    def _consistent(self) -> InputSchema:
        rank = 1 if self.kind is DataKind.TABLE else 3
        if len(self.input_shape) != rank:
            raise ValueError(
                f"a {self.kind.value} input has {rank} dimension(s), got {list(self.input_shape)}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        named_columns = self.kind is DataKind.TABLE and len(self.feature_names) == self.input_shape[0]
        if self.feature_names and not named_columns:
            raise ValueError("feature names must name each column of a table input")
        return self

    @classmethod
    def of(cls, dataset: Dataset) -> InputSchema:
        return cls(
            kind=dataset.kind,
            input_shape=dataset.input_shape,
            num_classes=dataset.num_classes,
            class_names=dataset.class_names,
            feature_names=dataset.feature_names if dataset.kind is DataKind.TABLE else (),
        )


class PolicyEntry(_Record):
    thresholds: dict[str, float]
    digest: str

    @model_validator(mode="after")
    def _digest_matches(self) -> PolicyEntry:
        expected = {f.name for f in dataclass_fields(VerificationPolicy)}
        if not recorded_thresholds(set(self.thresholds)):  # files before a later field lack it
            raise ValueError(f"policy thresholds must be exactly {', '.join(sorted(expected))}")
        try:
            policy = VerificationPolicy.from_record(self.thresholds)
        except ConfigError as exc:
            raise ValueError(exc.user_message) from exc
        if policy.digest() != self.digest:
            raise ValueError("the policy digest does not match its thresholds")
        return self

    @classmethod
    def of(cls, policy: VerificationPolicy) -> PolicyEntry:
        return cls(thresholds=policy.as_dict(), digest=policy.digest())

    def policy(self) -> VerificationPolicy:
        return VerificationPolicy.from_record(self.thresholds)


class TimingEntry(_Record):
    commit_seconds: float = Field(gt=0)
    vote_seconds: float = Field(gt=0)
    aggregate_seconds: float = Field(gt=0)

    @classmethod
    def of(cls, timing: RoundTiming) -> TimingEntry:
        return cls(commit_seconds=timing.commit_seconds, vote_seconds=timing.vote_seconds,
                   aggregate_seconds=timing.aggregate_seconds)

    def timing(self) -> RoundTiming:
        return RoundTiming(self.commit_seconds, self.vote_seconds, self.aggregate_seconds)


class Consortium(_Record):
    """The whole consortium file; `signature` is the admin's over `canonical_bytes()`."""

    format_version: Literal[1, 2]
    name: str = Field(min_length=1)
    chain_id: int = Field(gt=0)
    contract: ContractEntry
    admin: Address
    coordinator: CoordinatorEntry
    model: ModelEntry
    input_schema: InputSchema
    policy: PolicyEntry
    timing: TimingEntry
    aggregator: str
    members: tuple[MemberEntry, ...] = ()
    smpc: SmpcEntry | None = None  # None: verification in plaintext, no TLS pinned
    signature: str = ""  # empty until signed

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, value: str) -> str:
        if value not in AGGREGATORS:
            raise ValueError(f"unknown aggregator '{value}'; expected one of {', '.join(AGGREGATORS)}")
        return value

    @field_validator("signature")
    @classmethod
    def _signature_shape(cls, value: str) -> str:
        if value and not _SIGNATURE.match(value):
            raise ValueError("the signature is not 65 hex-encoded bytes")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Consortium:
        if self.model.input_shape != self.input_schema.input_shape:
            raise ValueError("the model's input shape differs from the input schema's")
        if self.model.num_classes != self.input_schema.num_classes:
            raise ValueError("the model's class count differs from the input schema's")
        addresses = [m.address.lower() for m in self.members]
        if len(set(addresses)) != len(addresses):
            raise ValueError("a member account is listed twice")
        ids = [m.hospital_id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError("a hospital id is listed twice")
        if self.coordinator.address.lower() in addresses:
            raise ValueError("the coordinator's account is also listed as a hospital")
        if self.format_version < self.required_format():
            raise ValueError(f"format version {self.format_version} holds no TLS certificates or smpc "
                             f"section; a secure consortium is format version {SECURE_FORMAT}")
        if self.smpc is not None:
            self._check_parties()
        return self

    def _check_parties(self) -> None:
        for m in self.members:
            if m.tls_cert is None:
                raise ValueError(f"the consortium is secure (it has an smpc section), but hospital "
                                 f"'{m.hospital_id}' has no tls_cert")
        stores = [("the coordinator", self.coordinator.store_url),
                  *((f"hospital '{m.hospital_id}'", m.store_url) for m in self.members)]
        problem = next((p for whose, url in stores if (p := secure_store_problem(url, whose))), None)
        if problem is not None:
            raise ValueError(problem)
        parties = self.parties()
        names = [p.name for p in parties]
        reused = next((n for n in names if names.count(n) > 1), None)
        if reused is not None:
            raise ValueError(f"the party name '{reused}' is used twice (a hospital id cannot be an SMPC "
                             f"player's or the driver's name)")
        _pinned_once([(p.name, p.tls_cert) for p in parties])

    def required_format(self) -> int:
        """The lowest format version that holds this record's fields."""
        secure = self.smpc is not None or any(m.tls_cert is not None for m in self.members)
        return format_version_for(secure=secure)

    # -- the signed form --

    def canonical_bytes(self) -> bytes:
        """The signed message: compact JSON of every field but the signature, keys sorted."""
        body = self._file_form()
        body.pop("signature")
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def _file_form(self) -> dict[str, Any]:
        """The record as JSON values, without the format-2 fields it does not use, so a format-1
        record's file and signed form are exactly what they were before format 2."""
        body = self.model_dump(mode="json")
        if body["smpc"] is None:
            del body["smpc"]
        for member in body["members"]:
            if member["tls_cert"] is None:
                del member["tls_cert"]
        return body

    def with_signature(self, signature: str) -> Consortium:
        return self.model_copy(update={"signature": signature})

    def with_member(self, member: MemberEntry) -> Consortium:
        """An unsigned copy listing one more hospital; a repeated account, id or certificate is
        refused, and so is a hospital without a certificate in a secure consortium."""
        if self.member(member.address) is not None:
            raise ConsortiumError(f"The account {member.address} is already a member of '{self.name}'.")
        if any(m.hospital_id == member.hospital_id for m in self.members):
            raise ConsortiumError(f"A hospital '{member.hospital_id}' is already a member of '{self.name}'.")
        if self.secure and member.tls_cert is None:
            raise ConsortiumError(
                f"The consortium '{self.name}' is secure: hospital '{member.hospital_id}' needs its TLS "
                "certificate (the tls-cert.pem its `tls create` made; --tls-cert CERT.pem).")
        if self.secure:
            require_secure_store(member.store_url, f"hospital '{member.hospital_id}'")
        members = [m.model_dump() for m in (*self.members, member)]
        version = max(self.format_version, SECURE_FORMAT if member.tls_cert is not None else PLAIN_FORMAT)
        return Consortium.checked("consortium", **{**self.model_dump(), "members": members, "signature": "",
                                                   "format_version": version})

    # -- reading it --

    def member(self, address: str) -> MemberEntry | None:
        return next((m for m in self.members if same_address(m.address, address)), None)

    @property
    def secure(self) -> bool:
        """Whether the SMPC parties of this consortium are pinned to their TLS certificates."""
        return self.smpc is not None

    def parties(self) -> list[Party]:
        """Every SMPC party, players first (in protocol order), then the driver, then the
        hospitals that have a certificate; empty when the consortium is not secure."""
        if self.smpc is None:
            return []
        players = [Party(p.name, "player", p.address, p.tls_cert) for p in self.smpc.players]
        driver = Party(SMPC_DRIVER, "driver", self.smpc.driver.address, self.smpc.driver.tls_cert)
        hospitals = [Party(m.hospital_id, "hospital", None, m.tls_cert) for m in self.members
                     if m.tls_cert is not None]
        return [*players, driver, *hospitals]

    def party(self, name: str) -> Party | None:
        return next((p for p in self.parties() if p.name == name), None)

    def pinned_party(self, name: str) -> Party:
        """The party `name`; ConsortiumError when the consortium is not secure or has no such party."""
        if not self.secure:
            raise ConsortiumError(f"The consortium '{self.name}' is not secure: it pins no TLS certificates.")
        party = self.party(name)
        if party is None:
            raise ConsortiumError(f"The consortium '{self.name}' has no SMPC party '{name}'; its parties are "
                                  f"{', '.join(p.name for p in self.parties())}.")
        return party

    def model_spec(self) -> ModelSpec:
        return self.model.spec()

    def verification_policy(self) -> VerificationPolicy:
        return self.policy.policy()

    def round_timing(self) -> RoundTiming:
        return self.timing.timing()

    def to_json(self) -> str:
        return json.dumps(self._file_form(), indent=2, ensure_ascii=False) + "\n"


def format_version_for(*, secure: bool) -> int:
    """The version a new file is written with: the lowest that holds what it uses."""
    return SECURE_FORMAT if secure else PLAIN_FORMAT


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples `ModelSpec` params hold (kernel sizes, target shapes)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def parse_consortium(text: str, *, source: str) -> Consortium:
    """The record in `text`; invalid JSON, unknown keys and inconsistent fields are refused."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConsortiumFileInvalid(f"The consortium file '{source}' is not valid JSON.", path=source,
                                    detail=str(exc)) from exc
    if isinstance(raw, dict) and raw.get("format_version") not in (None, *READABLE_FORMATS):
        raise ConsortiumFileInvalid(
            f"The consortium file '{source}' has format version {raw.get('format_version')!r}; "
            f"this version of MedFedChain reads versions {READABLE_FORMATS[0]} to {READABLE_FORMATS[-1]}.",
            path=source)
    try:
        return Consortium.model_validate(raw)
    except ValidationError as exc:
        raise ConsortiumFileInvalid(f"The consortium file '{source}' is not valid: {_first_error(exc)}.",
                                    path=source, detail=str(exc)) from exc


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "the record"
    what = "is not allowed (unknown key)" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{where} {what}"


def read_consortium(path: Path) -> Consortium:
    """The record in the file at `path`, its signature not yet checked."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsortiumFileInvalid(f"The consortium file '{path}' cannot be read.", path=str(path),
                                    detail=str(exc)) from exc
    return parse_consortium(text, source=str(path))


def verify_signature(consortium: Consortium, recover: RecoverSigner) -> None:
    """Refuses a record its admin did not sign exactly as it is."""
    if not consortium.signature:
        raise ConsortiumSignatureInvalid(
            f"The consortium file for '{consortium.name}' is not signed by its admin.",
            expected=consortium.admin, recovered=None)
    try:
        signer: str | None = recover(consortium.canonical_bytes(), consortium.signature)
    except ValueError:
        signer = None
    if signer is None or not same_address(signer, consortium.admin):
        raise ConsortiumSignatureInvalid(
            f"The consortium file for '{consortium.name}' does not carry its admin's signature: it was "
            "changed after the admin signed it. Ask the admin for the current file.",
            expected=consortium.admin, recovered=signer)


def load_consortium(path: Path, recover: RecoverSigner) -> Consortium:
    """Reads the file and checks that its admin signed it as it is."""
    consortium = read_consortium(path)
    verify_signature(consortium, recover)
    return consortium


def write_consortium(path: Path, consortium: Consortium) -> None:
    """Writes a signed record atomically (never half a file)."""
    if not consortium.signature:
        raise ConsortiumError("Only a signed consortium file can be written.")
    try:
        write_atomic(Path(path), consortium.to_json())
    except OSError as exc:
        raise ConsortiumError(f"The consortium file '{path}' cannot be written.", detail=str(exc)) from exc


def check_dataset_fits(consortium: Consortium, dataset: Dataset) -> None:
    """Refuses a hospital's dataset that the consortium's model cannot train on."""
    schema = consortium.input_schema
    where = f"Dataset '{dataset.name}' does not fit the consortium '{consortium.name}'"
    if dataset.kind is not schema.kind:
        raise DataError(f"{where}: it is a {dataset.kind.value} dataset, the consortium trains on "
                        f"{schema.kind.value} data.", path=dataset.source or None)
    if dataset.input_shape != schema.input_shape:
        if schema.kind is DataKind.TABLE:
            message = (f"it has {dataset.input_shape[0]} feature columns, the consortium's model takes "
                       f"{schema.input_shape[0]}.")
        else:
            message = (f"its images are {_shape(dataset.input_shape)}, the consortium's model takes "
                       f"{_shape(schema.input_shape)} (height x width x channels).")
        raise DataError(f"{where}: {message}", path=dataset.source or None)
    if dataset.num_classes != schema.num_classes:
        raise DataError(f"{where}: it has {dataset.num_classes} classes, the consortium's model "
                        f"predicts {schema.num_classes}.", path=dataset.source or None)
    if schema.class_names and dataset.class_names != schema.class_names:
        raise DataError(f"{where}: its classes are {', '.join(dataset.class_names)} (in this order), the "
                        f"consortium's are {', '.join(schema.class_names)}.", path=dataset.source or None)
    if schema.feature_names and dataset.feature_names and dataset.feature_names != schema.feature_names:
        pairs = zip(dataset.feature_names, schema.feature_names, strict=True)
        differ = next(i for i, (a, b) in enumerate(pairs) if a != b)
        raise DataError(f"{where}: column {differ + 1} is '{dataset.feature_names[differ]}', the consortium "
                        f"expects '{schema.feature_names[differ]}' there.", path=dataset.source or None)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)
