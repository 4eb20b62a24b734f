"""A real federation on one machine: an anvil node, a coordinator process and one process per
hospital, each with its own data directory, keystore and data, as on separate machines.

Provisioning runs the same use cases as `account create` (in each site's own home) and
`consortium init` / `add-hospital` (in the admin's home); the sites then run `python main.py
coordinator` and `python main.py node` as subprocesses, talking only through the chain and each
other's model stores on loopback. Used by tests/test_deployment.py and bench/deployment.py.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.federation.channel import RoundTiming
from core.services.consortium import ConsortiumPlan, SmpcPlan, add_hospital, create_account, init_consortium
from core.services.tls import create_tls_identity
from core.settings import load_settings
from ledger.anvil import AnvilNode, ensure_anvil, free_port

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "samples" / "breast_cancer_wdbc.csv"
PASSWORD = "loopback-test-password"
LABEL = "diagnosis"
PLAYERS = ("server0", "server1", "server2")


def split_csv(source: Path, parts: int, out_dir: Path) -> list[Path]:
    """Deals the rows of a CSV round-robin into `parts` files: each hospital's own records."""
    with source.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    paths = []
    for i in range(parts):
        path = out_dir / f"records-{i + 1}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(body[i::parts])
        paths.append(path)
    return paths


@dataclass
class SiteProcess:
    name: str
    home: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    runs: int = 0


@dataclass
class LoopbackFederation:
    work: Path
    hospitals: int = 4
    malicious: int = 1
    timing: RoundTiming = field(default_factory=lambda: RoundTiming(30, 30, 60))
    epochs: int = 3
    block_time: float = 1.0  # anvil's interval mining, in seconds (bench/deployment.py varies it)
    anvil: AnvilNode | None = None
    consortium: Path | None = None
    sites: dict[str, SiteProcess] = field(default_factory=dict)
    secure: bool = False  # a secure consortium: SMPC players as processes, the driver in the coordinator
    attack: str = "label_flip"
    player_addresses: dict[str, str] = field(default_factory=dict)

    @property
    def hospital_ids(self) -> list[str]:
        return [f"hospital-{i}" for i in range(1, self.hospitals + 1)]

    @property
    def attackers(self) -> list[str]:
        return self.hospital_ids[self.hospitals - self.malicious:]

    @property
    def rpc_url(self) -> str:
        assert self.anvil is not None
        return self.anvil.url

    def home(self, name: str) -> Path:
        return self.work / name

    def provision(self) -> None:
        """The admin's consortium, each site's own account, each hospital's own records."""
        os.environ["MEDFED_KEYSTORE_PASSWORD"] = PASSWORD
        self.anvil = AnvilNode(ensure_anvil(), block_time=self.block_time).start()
        addresses = {}
        for name in ["coordinator", *self.hospital_ids]:
            addresses[name] = create_account(load_settings(home=self.home(name)), lambda: PASSWORD).address
        records = split_csv(SAMPLE, self.hospitals, self.work / "records")
        self.consortium = self.work / "consortium.json"
        certs: dict[str, Path] = {}
        smpc = None
        if self.secure:
            # Every party makes its TLS identity in its own home; only certificates reach the admin.
            # The coordinator's home is the SMPC driver's.
            for name in [*PLAYERS, *self.hospital_ids]:
                certs[name] = create_tls_identity(load_settings(home=self.home(name)), name).cert_path
            certs["driver"] = create_tls_identity(load_settings(home=self.home("coordinator")), "driver").cert_path
            self.player_addresses.update({name: f"127.0.0.1:{free_port()}" for name in (*PLAYERS, "driver")})
            smpc = SmpcPlan(players=[(n, self.player_addresses[n], certs[n]) for n in PLAYERS],
                            driver_cert=certs["driver"], driver_address=self.player_addresses["driver"])
        # A secure consortium's model stores serve over mutual TLS; a plain one's over HTTP.
        scheme = "https" if self.secure else "http"
        plan = ConsortiumPlan(name="loopback", dataset=str(SAMPLE), label_column=LABEL, drop_columns=("id",),
                              coordinator=addresses["coordinator"],
                              coordinator_store_url=f"{scheme}://127.0.0.1:{free_port()}", timing=self.timing,
                              smpc=smpc)
        admin = load_settings(home=self.home("admin"))
        init_consortium(plan, settings=admin, rpc_url=self.rpc_url, out=self.consortium, password=lambda: PASSWORD)
        for hid in self.hospital_ids:
            add_hospital(self.consortium, settings=admin, rpc_url=self.rpc_url, address=addresses[hid],
                         hospital_id=hid, store_url=f"{scheme}://127.0.0.1:{free_port()}", password=lambda: PASSWORD,
                         tls_cert=certs.get(hid))
        common = ["--consortium", str(self.consortium), "--rpc", self.rpc_url]
        if self.secure:
            for name in PLAYERS:
                self.sites[name] = SiteProcess(name, self.home(name),
                                               ["smpc-player", "--home", str(self.home(name)), *common,
                                                "--name", name])
        for i, hid in enumerate(self.hospital_ids):
            args = ["node", "--home", str(self.home(hid)), *common, "--dataset", str(records[i]),
                    "--label-column", LABEL, "--drop-columns", "id", "--epochs", str(self.epochs)]
            if hid in self.attackers:
                args += ["--attack", self.attack, "--colluders", *self.attackers]
            self.sites[hid] = SiteProcess(hid, self.home(hid), args)

    def coordinator(self, rounds: int) -> SiteProcess:
        assert self.consortium is not None
        site = SiteProcess("coordinator", self.home("coordinator"),
                           ["coordinator", "--home", str(self.home("coordinator")), "--consortium",
                            str(self.consortium), "--rpc", self.rpc_url, "--rounds", str(rounds)])
        self.sites["coordinator"] = site
        return site

    def start(self, name: str, *, exit_at: str | None = None, extra: list[str] | None = None,
              tamper: str | None = None) -> SiteProcess:
        site = self.sites[name]
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", MEDFED_KEYSTORE_PASSWORD=PASSWORD,
                   QT_QPA_PLATFORM="offscreen")
        env.pop("MEDFED_TEST_EXIT_AT", None)
        env.pop("MEDFED_TEST_TAMPER", None)
        if exit_at:
            env["MEDFED_TEST_EXIT_AT"] = exit_at
        if tamper:
            env["MEDFED_TEST_TAMPER"] = tamper  # "<hospital>:<round>": a player alters that share once
        site.runs += 1
        site.log = self.work / "logs" / f"{name}.{site.runs}.log"
        site.log.parent.mkdir(parents=True, exist_ok=True)
        with site.log.open("wb") as out:
            site.proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *site.args, *(extra or [])],
                                         env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return site

    def wait(self, name: str, timeout: float) -> int:
        site = self.sites[name]
        assert site.proc is not None
        try:
            return site.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} did not finish in {timeout:.0f} s:\n{self.tail(name)}") from None

    def tail(self, name: str, lines: int = 40) -> str:
        site = self.sites[name]
        if site.log is None or not site.log.exists():
            return "(no log)"
        return "\n".join(site.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, name: str, timeout: float = 120.0, marker: str = "SMPC player ready") -> None:
        """Waits until a player's log says it serves (or fails if the process ended)."""
        site = self.sites[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if site.log is not None and site.log.exists() and marker in site.log.read_text(errors="replace"):
                return
            if site.proc is not None and site.proc.poll() is not None:
                raise AssertionError(f"{name} exited with {site.proc.returncode}:\n{self.tail(name)}")
            time.sleep(0.2)
        raise AssertionError(f"{name} was not ready in {timeout:.0f} s:\n{self.tail(name)}")

    def running(self) -> Iterator[SiteProcess]:
        return (s for s in self.sites.values() if s.proc is not None and s.proc.poll() is None)

    def stop_all(self) -> None:
        for site in self.running():
            site.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + 20
        for site in list(self.sites.values()):
            if site.proc is not None and site.proc.poll() is None:
                try:
                    site.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    site.proc.kill()
        if self.anvil is not None:
            self.anvil.stop()
        os.environ.pop("MEDFED_KEYSTORE_PASSWORD", None)


def observer(federation: LoopbackFederation):  # type: ignore[no-untyped-def]
    """A read-only channel on the consortium's contract, for the test's own checks."""
    from core.federation.consortium import read_consortium
    from core.state.blobs import BlobStore
    from ledger.channel import LedgerChannel
    from ledger.clock import NodeClock
    from ledger.session import LedgerSettings, open_ledger

    assert federation.consortium is not None
    address = read_consortium(federation.consortium).contract.address
    session = open_ledger(LedgerSettings(home=federation.work / "observer", rpc_url=federation.rpc_url,
                                         contract_address=address), read_only=True)
    return LedgerChannel(session.client, "observer", None, BlobStore(federation.work / "observer" / "blobs"),
                         clock=NodeClock(session.w3, endpoint=federation.rpc_url))
