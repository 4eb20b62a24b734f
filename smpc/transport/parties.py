"""The parties of a secure federation as the consortium file pins them: name, role, certificate.

A gateway trusts exactly these certificates and tells callers apart by certificate fingerprint,
so a name or a fingerprint appearing twice would let one party pass for another: refused here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from smpc.errors import SmpcError, UnknownParty
from smpc.transport.identity import fingerprint

Role = Literal["player", "driver", "hospital"]
ROLES: tuple[Role, ...] = ("player", "driver", "hospital")


@dataclass(frozen=True)
class Party:
    """One pinned party; `address` is its public gateway `host:port` (None for a hospital)."""

    name: str
    role: Role
    cert_pem: bytes
    address: str | None = None
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise SmpcError(f"Party '{self.name}' has role '{self.role}'; roles are {', '.join(ROLES)}.")
        object.__setattr__(self, "fingerprint", fingerprint(self.cert_pem))


class PartyDirectory:
    """The pinned parties, looked up by name or by certificate fingerprint."""

    def __init__(self, parties: Iterable[Party]) -> None:
        self._by_name: dict[str, Party] = {}
        self._by_fingerprint: dict[str, Party] = {}
        for party in parties:
            if party.name in self._by_name:
                raise SmpcError(f"The consortium names the party '{party.name}' twice.")
            other = self._by_fingerprint.get(party.fingerprint)
            if other is not None:
                raise SmpcError(
                    f"Parties '{other.name}' and '{party.name}' have the same TLS certificate; "
                    "each party must make its own identity.",
                    detail=party.fingerprint,
                )
            self._by_name[party.name] = party
            self._by_fingerprint[party.fingerprint] = party

    def __iter__(self) -> Iterator[Party]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def by_name(self, name: str) -> Party:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownParty(
                f"'{name}' is not a party of this consortium; parties are {', '.join(self._by_name)}.",
                party=name,
            ) from None

    def by_fingerprint(self, cert_fingerprint: str) -> Party | None:
        return self._by_fingerprint.get(cert_fingerprint.lower())

    def trust_bundle(self) -> bytes:
        """All pinned certificates, concatenated PEM: the roots a listener accepts clients from."""
        return b"".join(p.cert_pem if p.cert_pem.endswith(b"\n") else p.cert_pem + b"\n" for p in self)
