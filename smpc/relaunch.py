"""Starting a party's command again under the loopback shim, before anything listens.

TensorFlow binds its server's port on every interface; the shim (`smpc.transport.loopback`) must
be loaded when the process starts, so a player's or the driver's command re-executes itself
with it, choosing its raw port first. Light on imports: it runs before TensorFlow is loaded.
"""

from __future__ import annotations

import os
import sys

from core.ports import free_port
from smpc.transport.loopback import PORTS_ENV, loopback_env

RAW_PORT_ENV = "MEDFEDCHAIN_RAW_PORT"


def raw_port_under_shim() -> int | None:
    """This process's raw TensorFlow port if it runs under the loopback shim, else None."""
    port = os.environ.get(RAW_PORT_ENV)
    if port and port in os.environ.get(PORTS_ENV, "").split(",") and "bind_loopback" in os.environ.get(
            "LD_PRELOAD", ""):
        return int(port)
    return None


def reexec_under_shim() -> None:
    """Starts this very command again under the loopback shim with a fresh raw port, unless it
    already runs so; returns only in the process that runs under the shim."""
    if raw_port_under_shim() is not None:
        return
    port = free_port()
    env = loopback_env([port], os.environ)
    env[RAW_PORT_ENV] = str(port)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *sys.argv] if not getattr(sys, "frozen", False) else [sys.executable, *sys.argv[1:]]
    os.execve(sys.executable, argv, env)
