"""Keeps a TensorFlow server's raw port on loopback, and checks that it is.

libtensorflow's gRPC server listens on "0.0.0.0:PORT" whatever host its cluster spec names.
A player's raw port runs any graph for anyone, so it must be reachable only from the player's
own gateway: on Linux an LD_PRELOAD shim (bind_loopback.c) turns the wildcard bind of the
listed ports into a loopback bind. Other systems need a firewall rule for the raw port; the
self-check `ensure_loopback_only` still refuses to serve a port seen listening elsewhere.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from smpc.errors import LoopbackUnavailable, RawPortExposed

PORTS_ENV = "MEDFEDCHAIN_LOOPBACK_PORTS"
SOURCE = Path(__file__).with_name("bind_loopback.c")
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


def _cache_dirs() -> list[Path]:
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(xdg) / "medfedchain", SOURCE.parent / ".build"]


def ensure_shim() -> Path:
    """The compiled shim, built on first use (and again whenever its source changes)."""
    if not sys.platform.startswith("linux"):
        raise LoopbackUnavailable(
            "On this operating system the SMPC player's raw TensorFlow port cannot be confined to "
            "this machine automatically; add a firewall rule that blocks it from other hosts.",
            detail=sys.platform,
        )
    source = SOURCE.read_bytes()
    name = f"bind_loopback-{hashlib.sha256(source).hexdigest()[:16]}.so"
    for directory in _cache_dirs():
        if (directory / name).is_file():
            return directory / name
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise LoopbackUnavailable(
            "A C compiler (cc) is needed once to build the SMPC player's loopback shim; install "
            "one (e.g. `apt install gcc`) and start the player again."
        )
    errors: list[str] = []
    for directory in _cache_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            errors.append(f"{directory}: {exc}")
            continue
        target = directory / name
        tmp = directory / f".{name}.{os.getpid()}.tmp"
        try:
            result = subprocess.run(
                [compiler, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(SOURCE), "-ldl"],
                capture_output=True, text=True, check=False,
            )
        except OSError as exc:
            errors.append(f"{compiler}: {exc}")
            continue
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise LoopbackUnavailable(
                "The SMPC player's loopback shim does not compile on this machine.",
                detail=result.stderr.strip()[-2000:],
            )
        tmp.replace(target)  # atomic: a concurrent start never loads a half-written library
        return target
    raise LoopbackUnavailable(
        "No writable directory for the SMPC player's loopback shim.", detail="; ".join(errors)
    )


def loopback_env(ports: Iterable[int], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process whose wildcard binds of `ports` stay on loopback."""
    env = dict(os.environ if base is None else base)
    shim = str(ensure_shim())
    preload = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    env["LD_PRELOAD"] = " ".join([*preload, shim]) if shim not in preload else " ".join(preload)
    listed = [p for p in env.get(PORTS_ENV, "").split(",") if p]
    env[PORTS_ENV] = ",".join(dict.fromkeys([*listed, *(str(int(p)) for p in ports)]))
    return env


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc prints each 32-bit word of the address in host (little-endian) byte order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)  # gRPC binds IPv4 addresses on dual-stack sockets as ::ffff:a.b.c.d


def listening_addresses(port: int) -> list[str]:
    """The local addresses on which some socket listens on TCP `port` (Linux /proc only);
    IPv4-mapped IPv6 addresses are given as IPv4."""
    found: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            host, _, hex_port = local.partition(":")
            if state == _LISTEN and int(hex_port, 16) == port:
                found.append(_decode_address(host))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def ensure_loopback_only(port: int) -> None:
    """Raises RawPortExposed if `port` listens on a non-loopback address; fails closed (raises
    LoopbackUnavailable) when no listener on `port` can be seen at all."""
    if not sys.platform.startswith("linux"):
        return  # no /proc: the firewall rule documented in docs/transport.md is the guard
    addresses = listening_addresses(port)
    if not addresses:
        raise LoopbackUnavailable(
            f"The SMPC player cannot see its raw TensorFlow port {port} listening, so it cannot "
            "check that the port is closed to other machines."
        )
    exposed = tuple(a for a in addresses if not is_loopback(a))
    if exposed:
        raise RawPortExposed(
            "The SMPC player's raw TensorFlow port is reachable from other machines; it must "
            "listen on loopback only (start the player through its launcher, or firewall the port).",
            port=port,
            addresses=exposed,
        )
