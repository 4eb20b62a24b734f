"""A local anvil JSON-RPC node: found or installed from the npm registry, started on a free loopback port.

Tests and the benchmark use it as a real node behind HTTP, like a Besu network in production.
The binary is looked up in `MEDFED_ANVIL` (a path), then PATH, then the cache directory
(`MEDFED_ANVIL_CACHE`, default ~/.cache/medfedchain/anvil), where `install_anvil` puts it with
`npm install @foundry-rs/anvil-linux-amd64`.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests

from core.ports import free_port
from ledger.errors import AnvilUnavailable

logger = logging.getLogger(__name__)

NPM_PACKAGE = "@foundry-rs/anvil-linux-amd64"
ANVIL_ENV = "MEDFED_ANVIL"
CACHE_ENV = "MEDFED_ANVIL_CACHE"
# anvil's first dev account: publicly known, funded on every anvil chain; for tests only.
DEV_PRIVATE_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "medfedchain" / "anvil"))


def _cached_binary(directory: Path) -> Path:
    return directory / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def find_anvil() -> Path | None:
    """The anvil binary, if one is configured, on PATH, or in the cache."""
    configured = os.environ.get(ANVIL_ENV)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    cached = _cached_binary(cache_dir())
    return cached if cached.is_file() else None


def install_anvil(directory: Path | None = None, timeout: float = 300.0) -> Path:
    """Installs anvil from the npm registry into the cache directory and returns the binary."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise AnvilUnavailable("The packaged anvil node runs on Linux x86-64 only; install Foundry instead.")
    directory = directory or cache_dir()
    npm = shutil.which("npm")
    if npm is None:
        raise AnvilUnavailable("npm is needed to install the anvil test node.")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [npm, "install", "--no-save", "--prefix", str(directory), NPM_PACKAGE],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise AnvilUnavailable("Installing anvil from the npm registry failed.", detail=str(exc)) from exc
    binary = _cached_binary(directory)
    if not binary.is_file():
        raise AnvilUnavailable("npm installed anvil but its binary is missing.", detail=str(binary))
    binary.chmod(0o755)
    return binary


def ensure_anvil() -> Path:
    return find_anvil() or install_anvil()


class AnvilNode:
    """One anvil process; with `state_file` its chain survives `stop()` and `start()`."""

    def __init__(
        self,
        binary: Path | None = None,
        *,
        port: int | None = None,
        state_file: Path | None = None,
        block_time: float | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or ensure_anvil()
        self.port = port or free_port()
        self.state_file = state_file
        self.block_time = block_time
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> AnvilNode:
        if self.running:
            return self
        args = [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.state_file is not None:
            args += ["--state", str(self.state_file)]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        args += list(self.extra_args)
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise AnvilUnavailable("The anvil node exited at start.", detail=err[-500:])
            try:
                requests.post(
                    self.url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                    timeout=1,
                ).raise_for_status()
                return self
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise AnvilUnavailable("The anvil node did not answer in time.", detail=self.url)

    def stop(self, timeout: float = 20.0) -> None:
        """Stops the node with SIGTERM, so anvil writes its state file first."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
