"""The TensorFlow cluster of an SMPC session: the three players in protocol order (the first two
hold the shares, the third is SecureNN's helper and the source of multiplication triples) and the
driver, the process that masters the session graphs.

In a deployment each process builds its own `PlayerConfig` (`smpc.deployment`): its own task at
its loopback raw port, every other task at a local forwarder of its gateway. `load`/`save` keep a
cluster as JSON, for tools and tests.
"""

from __future__ import annotations

import json
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from smpc.errors import PlayerUnavailable, SmpcError

ROLES = ("server0", "server1", "server2")
DRIVER = "driver"
LOCAL_JOB = "localhost"


@dataclass(frozen=True)
class PlayerConfig:
    """The cluster of a remote session, as read from players.json."""

    job: str
    players: tuple[tuple[str, str], ...]  # (name, host:port) in protocol order
    driver: str

    @classmethod
    def load(cls, path: Path) -> PlayerConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=OrderedDict)
        except (OSError, json.JSONDecodeError) as exc:
            raise SmpcError(f"The SMPC players file '{path}' cannot be read.", detail=str(exc)) from exc
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "players config") -> PlayerConfig:
        unknown = set(raw) - {"job", "players", "driver"}
        if unknown:
            raise SmpcError(f"{source}: unknown keys {sorted(unknown)}.")
        players = raw.get("players")
        if not isinstance(players, dict) or len(players) != len(ROLES):
            raise SmpcError(f"{source}: 'players' must map exactly three player names to host:port.")
        driver = raw.get("driver")
        entries = [*players.items(), (DRIVER, driver)]
        if not isinstance(driver, str):
            raise SmpcError(
                f"{source}: 'driver' needs the 'host:port' at which this process joins the cluster."
            )
        for name, address in entries:
            if not isinstance(address, str) or ":" not in address:
                raise SmpcError(f"{source}: player '{name}' needs a 'host:port' address, got {address!r}.")
        if DRIVER in players:
            raise SmpcError(f"{source}: '{DRIVER}' is reserved for the driving process.")
        return cls(job=str(raw.get("job", "medfedchain")), players=tuple(players.items()), driver=driver)

    def to_dict(self) -> dict:
        return {"job": self.job, "players": dict(self.players), "driver": self.driver}

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        tmp.replace(path)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.players]

    def hostmap(self) -> OrderedDict[str, str]:
        """Task order of the cluster: the three players, then the driver."""
        return OrderedDict([*self.players, (DRIVER, self.driver)])

    def task_index(self, name: str) -> int:
        names = list(self.hostmap())
        if name not in names:
            raise SmpcError(f"'{name}' is not a player of this federation; players are {', '.join(names)}.")
        return names.index(name)

    def device(self, name: str) -> str:
        return f"/job:{self.job}/replica:0/task:{self.task_index(name)}/device:CPU:0"

    def cluster_def(self):  # -> tf.train.ClusterSpec; lazy import keeps this module TF-free
        import tensorflow as tf

        return tf.train.ClusterSpec({self.job: list(self.hostmap().values())})

    def probe(self, timeout_s: float) -> None:
        """Raises PlayerUnavailable unless every player accepts a TCP connection in time."""
        for name, address in self.players:
            host, port = address.rsplit(":", 1)
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with socket.create_connection((host, int(port)), timeout=max(0.1, timeout_s)):
                        break
                except OSError as exc:
                    if time.monotonic() >= deadline:
                        raise PlayerUnavailable(
                            f"SMPC player '{name}' at {address} is not reachable; start it or check "
                            "the network, then retry the round.",
                            player=name,
                            detail=str(exc),
                        ) from exc
                    time.sleep(0.1)
