"""The provisioning use cases of a real federation: this machine's account, and the consortium
file the admin makes (`init`), extends (`add_hospital`) and every site checks at start (`check`).

No private key ever travels: each site runs `create_account` on its own machine and sends only
the printed address to the admin; the admin signs the file; sites verify it against the chain.
A secure consortium also pins each SMPC party's TLS certificate (made with `core.services.tls`);
each site checks at start that its own certificate is the one pinned for it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.data.loading import load_dataset
from core.errors import ConfigError
from core.federation.channel import RoundTiming
from core.federation.consortium import (
    SMPC_PLAYERS,
    Consortium,
    ConsortiumError,
    ContractEntry,
    CoordinatorEntry,
    DriverEntry,
    InputSchema,
    MemberEntry,
    ModelEntry,
    Party,
    PlayerEntry,
    PolicyEntry,
    SmpcEntry,
    TimingEntry,
    check_dataset_fits,
    format_version_for,
    load_consortium,
    require_secure_store,
    write_consortium,
)
from core.federation.policy import VerificationPolicy
from core.models.architecture import spec_for
from core.services.tls import certificate_fingerprint, check_tls_identity, read_certificate
from core.settings import Settings
from ledger.accounts import PASSWORD_ENV
from ledger.client import LedgerClient
from ledger.consortium import (
    deploy_federation,
    recover_signer,
    register_member,
    sign_consortium,
    verify_on_chain,
)
from ledger.identity import create_own_account, own_address, unlock_own_account
from ledger.node import connect_rpc
from ledger.session import fund_account

logger = logging.getLogger(__name__)

__all__ = [
    "AccountResult",
    "ConsortiumPlan",
    "PartySite",
    "SmpcPlan",
    "add_hospital",
    "account_address",
    "check_consortium",
    "check_membership",
    "check_party",
    "check_dataset",
    "check_dataset_fits",
    "create_account",
    "format_consortium",
    "init_consortium",
    "load_policy_file",
    "read_password",
    "show_consortium",
    "smpc_entry",
    "Site",
]

RECEIPT_TIMEOUT = 120.0


@dataclass(frozen=True)
class AccountResult:
    address: str
    created: bool  # False: the data directory already had its account


def read_password(ask: Callable[[str], str] | None, *, confirm: bool) -> str:
    """The keystore password from MEDFED_KEYSTORE_PASSWORD, else asked with `ask` (twice when
    `confirm`); without either, a clear error."""
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    if ask is None:
        raise ConfigError(
            f"Set {PASSWORD_ENV} to the keystore password (or run this on a terminal to type it).")
    first = ask("Keystore password: ")
    if not first:
        raise ConfigError("The keystore password must not be empty.")
    if confirm and ask("Repeat the password: ") != first:
        raise ConfigError("The two passwords differ; nothing was created.")
    return first


def create_account(settings: Settings, password: Callable[[], str]) -> AccountResult:
    """Makes this machine's encrypted account; an existing one is kept (and no password asked)."""
    existing = own_address(settings.keystore_dir)
    if existing is not None:
        return AccountResult(existing, created=False)
    return AccountResult(create_own_account(settings.keystore_dir, password()), created=True)


def account_address(settings: Settings) -> str:
    """This machine's address; an error when `account create` was never run for it."""
    address = own_address(settings.keystore_dir)
    if address is None:
        raise ConfigError(f"The data directory {settings.home} has no ledger account: run "
                          "`account create --home DIR` first.")
    return address


@dataclass(frozen=True)
class SmpcPlan:
    """The SMPC parties of a secure consortium, as the admin collected their certificates."""

    players: Sequence[tuple[str, str, Path]]  # (name, host:port of its TLS gateway, its tls-cert.pem)
    driver_cert: Path
    driver_address: str | None = None


@dataclass(frozen=True)
class ConsortiumPlan:
    """What the admin decides when setting up a consortium."""

    name: str
    dataset: str  # the agreed task's reference dataset: a built-in name or a path
    coordinator: str
    coordinator_store_url: str
    architecture: str | None = None
    timing: RoundTiming = field(default_factory=RoundTiming)
    aggregator: str = "fedavg"
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    label_column: str | None = None
    drop_columns: Sequence[str] = ()
    smpc: SmpcPlan | None = None  # None: a plain consortium, no TLS pinned


def smpc_entry(plan: SmpcPlan) -> SmpcEntry:
    """The SMPC section from the admin's plan: each certificate file read and checked, the players
    put in protocol order (server0, server1, server2)."""
    by_name: dict[str, tuple[str, Path]] = {}
    for name, address, cert in plan.players:
        if name not in SMPC_PLAYERS:
            raise ConsortiumError(f"Unknown SMPC player '{name}': the players are {', '.join(SMPC_PLAYERS)}.")
        if name in by_name:
            raise ConsortiumError(f"The SMPC player '{name}' is given twice.")
        by_name[name] = (address, cert)
    missing = [name for name in SMPC_PLAYERS if name not in by_name]
    if missing:
        raise ConsortiumError(f"A secure consortium needs all three SMPC players; missing: "
                              f"{', '.join(missing)}.")
    players = [PlayerEntry.checked(f"SMPC player '{name}'", name=name, address=by_name[name][0],
                                   tls_cert=read_certificate(by_name[name][1], whose=f"SMPC player '{name}'"))
               for name in SMPC_PLAYERS]
    if not plan.driver_address:
        raise ConsortiumError("A secure consortium needs the SMPC driver's address (--smpc-driver-address "
                              "HOST:PORT): the players fetch from it the public values it feeds.")
    driver = DriverEntry.checked("SMPC driver", address=plan.driver_address,
                                 tls_cert=read_certificate(plan.driver_cert, whose="the SMPC driver"))
    return SmpcEntry.checked("SMPC section", players=tuple(players), driver=driver)


def _rpc(settings: Settings, rpc_url: str | None) -> str:
    url = rpc_url or settings.rpc_url
    if not url:
        raise ConfigError("Give the ledger node's URL with --rpc (or set rpc_url in the settings).")
    return url


def init_consortium(plan: ConsortiumPlan, *, settings: Settings, rpc_url: str | None, out: Path,
                    password: Callable[[], str]) -> Consortium:
    """Deploys the federation contract with this data directory's account as its admin (made if
    absent), sets the coordinator, and writes the signed consortium file to `out`."""
    dataset = load_dataset(plan.dataset, label_column=plan.label_column, drop_columns=plan.drop_columns)
    spec = spec_for(dataset, plan.architecture)
    # Everything but the chain is checked before anything is deployed.
    coordinator = CoordinatorEntry.checked("coordinator", address=plan.coordinator,
                                           store_url=plan.coordinator_store_url)
    timing = TimingEntry.checked("round timing", commit_seconds=plan.timing.commit_seconds,
                                 vote_seconds=plan.timing.vote_seconds,
                                 aggregate_seconds=plan.timing.aggregate_seconds)
    policy = PolicyEntry.of(plan.policy)
    smpc = smpc_entry(plan.smpc) if plan.smpc is not None else None
    if smpc is not None:
        require_secure_store(coordinator.store_url, "the coordinator")
    url = _rpc(settings, rpc_url)
    secret = password()
    if own_address(settings.keystore_dir) is None:
        create_own_account(settings.keystore_dir, secret)
    admin = unlock_own_account(settings.keystore_dir, secret)
    w3 = connect_rpc(url)
    fund_account(w3, admin.address, funder=None, timeout=RECEIPT_TIMEOUT, endpoint=url)
    client = deploy_federation(w3, admin, coordinator=coordinator.address,
                               coordinator_store_url=coordinator.store_url, endpoint=url,
                               receipt_timeout=RECEIPT_TIMEOUT)
    _fund_member(w3, coordinator.address, admin, url)
    unsigned = Consortium.checked(
        "consortium", format_version=format_version_for(secure=smpc is not None), name=plan.name,
        chain_id=client.chain_id,
        contract=ContractEntry(address=client.address, code_hash=client.code_hash()),
        admin=admin.address, coordinator=coordinator, model=ModelEntry.of(spec),
        input_schema=InputSchema.of(dataset), policy=policy, timing=timing, aggregator=plan.aggregator,
        smpc=smpc,
    )
    consortium = sign_consortium(unsigned, admin)
    write_consortium(out, consortium)
    logger.info("consortium '%s' set up: contract %s on chain %d", plan.name, client.address, client.chain_id)
    return consortium


def add_hospital(path: Path, *, settings: Settings, rpc_url: str | None, address: str, hospital_id: str,
                 store_url: str, password: Callable[[], str], tls_cert: Path | None = None) -> Consortium:
    """Registers a hospital on chain (admin only, between rounds) and rewrites the file, re-signed,
    listing it (with the certificate in `tls_cert`, required when the consortium is secure). Safe
    to re-run: a hospital already registered as asked is only written."""
    consortium = load_consortium(path, recover_signer)
    cert = read_certificate(tls_cert, whose=f"hospital '{hospital_id}'") if tls_cert is not None else None
    extended = consortium.with_member(MemberEntry.checked("hospital", address=address, hospital_id=hospital_id,
                                                          store_url=store_url, tls_cert=cert))
    client = _client(consortium, settings, rpc_url)
    verify_on_chain(consortium, client)
    admin = unlock_own_account(settings.keystore_dir, password())
    register_member(client, admin, extended.members[-1])
    _fund_member(client.w3, address, admin, client.endpoint)
    signed = sign_consortium(extended, admin)
    write_consortium(path, signed)
    return signed


def _fund_member(w3: Any, address: str, admin: Any, endpoint: str) -> None:
    """On a network where gas costs ether, the operator gives a new member its gas money: from the
    development node's account where there is one (anvil), else from the admin's own balance.
    Free-gas networks (Besu QBFT with min-gas-price 0) need nothing."""
    fund_account(w3, address, funder=None if w3.eth.accounts else admin, timeout=RECEIPT_TIMEOUT,
                 endpoint=endpoint)


def show_consortium(path: Path) -> Consortium:
    """The consortium file, its admin's signature checked."""
    return load_consortium(path, recover_signer)


@dataclass(frozen=True)
class Site:
    """This machine in a verified consortium: its account, its hospital id (None: coordinator)
    and, in a secure consortium, its pinned TLS certificate's fingerprint."""

    consortium: Consortium
    account: str
    hospital_id: str | None
    tls_fingerprint: str | None = None


@dataclass(frozen=True)
class PartySite:
    """This machine as one SMPC party of a verified secure consortium."""

    consortium: Consortium
    party: Party
    tls_fingerprint: str
    account: str | None  # a hospital's; players and the driver need no ledger account
    chain_checked: bool


def check_consortium(path: Path, *, settings: Settings, rpc_url: str | None) -> Site:
    """What a site runs at start: the file is signed by its admin, the chain holds the federation
    it describes, this machine's account is one of its hospitals or its coordinator, and (secure
    consortium) a hospital's TLS certificate is the one pinned for it."""
    site = check_membership(path, settings=settings, rpc_url=rpc_url)
    if site.hospital_id is None or not site.consortium.secure:
        return site
    return replace(site, tls_fingerprint=check_tls_identity(site.consortium, settings.tls_dir, site.hospital_id))


def check_membership(path: Path, *, settings: Settings, rpc_url: str | None) -> Site:
    """`check_consortium` without the TLS check (`tls_fingerprint` stays None): what the app's
    "Join a consortium" shows while this machine's TLS identity is still being made or pinned."""
    consortium = load_consortium(path, recover_signer)
    account = account_address(settings)
    verify_on_chain(consortium, _client(consortium, settings, rpc_url), account=account)
    member = consortium.member(account)
    return Site(consortium, account, member.hospital_id if member is not None else None)


def check_party(path: Path, *, settings: Settings, rpc_url: str | None, party: str) -> PartySite:
    """What an SMPC party runs at start: the file is signed by its admin and this machine's TLS
    certificate is the one pinned for `party`. A hospital is checked as `check_consortium` does
    (and must be `party`); a player or the driver has no account, and the chain is checked when a
    ledger node is known (--rpc or the settings' rpc_url)."""
    consortium = load_consortium(path, recover_signer)
    found = consortium.pinned_party(party)
    if found.role == "hospital":
        site = check_consortium(path, settings=settings, rpc_url=rpc_url)
        if site.hospital_id != party or site.tls_fingerprint is None:
            role = "the coordinator" if site.hospital_id is None else f"hospital '{site.hospital_id}'"
            raise ConsortiumError(f"This machine's account ({site.account}) is {role} of '{consortium.name}', "
                                  f"not '{party}'.")
        return PartySite(site.consortium, found, site.tls_fingerprint, site.account, chain_checked=True)
    chain = bool(rpc_url or settings.rpc_url)
    if chain:
        verify_on_chain(consortium, _client(consortium, settings, rpc_url))
    pinned = check_tls_identity(consortium, settings.tls_dir, party)
    return PartySite(consortium, found, pinned, None, chain_checked=chain)


def check_dataset(consortium: Consortium, source: str, *, label_column: str | None = None,
                  drop_columns: Sequence[str] = ()) -> None:
    """Loads a hospital's dataset; DataError when the consortium's model cannot train on it."""
    check_dataset_fits(consortium, load_dataset(source, label_column=label_column, drop_columns=drop_columns))


def _client(consortium: Consortium, settings: Settings, rpc_url: str | None) -> LedgerClient:
    url = _rpc(settings, rpc_url)
    return LedgerClient(connect_rpc(url), consortium.contract.address, endpoint=url,
                        receipt_timeout=RECEIPT_TIMEOUT)


def load_policy_file(path: Path) -> VerificationPolicy:
    """A verification policy from a JSON object of thresholds (missing ones take the defaults)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"The policy file '{path}' cannot be read as JSON.", detail=str(exc)) from exc
    known = {f.name for f in fields(VerificationPolicy)}
    if not isinstance(raw, dict) or set(raw) - known:
        raise ConfigError(
            f"The policy file '{path}' must be an object with some of: {', '.join(sorted(known))}.",
            detail=None if not isinstance(raw, dict) else f"unknown: {sorted(set(raw) - known)}")
    try:
        return VerificationPolicy(**{key: float(value) for key, value in raw.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"The policy file '{path}' holds a threshold that is not a number.") from exc


def format_consortium(consortium: Consortium) -> str:
    """The verified file as an IT person reads it."""
    schema, timing, thresholds = consortium.input_schema, consortium.timing, consortium.policy.thresholds
    names = f" ({', '.join(schema.class_names)})" if schema.class_names else ""
    lines = [
        f"Consortium '{consortium.name}' (format {consortium.format_version}), signed by its admin",
        f"  chain id      {consortium.chain_id}",
        f"  contract      {consortium.contract.address} (code keccak {consortium.contract.code_hash})",
        f"  admin         {consortium.admin}",
        f"  coordinator   {consortium.coordinator.address}  store {consortium.coordinator.store_url}",
        f"  model         {consortium.model_spec().describe()}",
        f"  input         {schema.kind.value} {'x'.join(map(str, schema.input_shape))}, "
        f"{schema.num_classes} classes{names}",
        f"  policy        digest {consortium.policy.digest}",
        *(f"                {key} = {value:g}" for key, value in sorted(thresholds.items())),
        f"  timing        commit {timing.commit_seconds:g} s, vote {timing.vote_seconds:g} s, "
        f"aggregate {timing.aggregate_seconds:g} s",
        f"  aggregator    {consortium.aggregator}",
        *_smpc_lines(consortium),
        f"  members       {len(consortium.members)}",
        *(line for m in consortium.members for line in _member_lines(m)),
    ]
    return "\n".join(lines)


def _smpc_lines(consortium: Consortium) -> list[str]:
    if consortium.smpc is None:
        return ["  smpc          none (verification in plaintext, no TLS certificates pinned)"]
    smpc = consortium.smpc
    lines = [f"  smpc          {smpc.protocol}, each party pinned to its TLS certificate (SHA-256 fingerprint)"]
    for player in smpc.players:
        lines.append(f"    {player.name:<20} player  {player.address:<30} "
                     f"{certificate_fingerprint(player.tls_cert, whose=player.name)}")
    lines.append(f"    {'driver':<20} driver  {smpc.driver.address or '(dials out)':<30} "
                 f"{certificate_fingerprint(smpc.driver.tls_cert, whose='the driver')}")
    return lines


def _member_lines(member: MemberEntry) -> list[str]:
    lines = [f"    {member.hospital_id:<20} {member.address}  store {member.store_url}"]
    if member.tls_cert is not None:
        lines.append(f"    {'':<20} tls {certificate_fingerprint(member.tls_cert, whose=member.hospital_id)}")
    return lines
