"""One party of the transport tests in its own process: a TF server (under the loopback shim)
behind its gateway, then a JSON-lines command loop on stdin (one JSON answer per line).

Run as `python -m tests.smpc.transport_party --spec spec.json --name NAME [--plain]`; with
--plain the TF servers talk to each other directly (the overhead baseline). The spec is written
by tests/smpc/test_transport.py: job, task order, parties (role, cert path, public address),
raw ports, identity homes and the allowed op types.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import grpc

READY = "transport party ready"
ECHO_METHOD = "/medfedchain.test.Echo/Echo"


def _config(devices: list[str] | None = None) -> Any:
    import tensorflow as tf

    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=1, intra_op_parallelism_threads=1,
                                      operation_timeout_in_ms=20_000)
    # The worker must see exactly the ops the driver built, not grappler's rewrites of them.
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    if devices:
        config.device_filters.extend(devices)
    return config


def echo_handler(directory: Any) -> grpc.GenericRpcHandler:
    """A stand-in for a player's own service: answers with the caller's pinned name."""
    from smpc.transport.gateway import caller

    def echo(request: bytes, context: Any) -> bytes:
        return caller(context, directory).name.encode() + b":" + request

    return grpc.method_handlers_generic_handler(
        "medfedchain.test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )


def product_graph(device: Any, size: int) -> tuple[Any, Any, Any]:
    """The test's protocol: a variable on server0 times one on server1, summed on the driver."""
    import numpy as np
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        with tf.device(device("server0")):
            a = tf.Variable(np.arange(size * size, dtype=np.float32).reshape(size, size) / size, name="a")
        with tf.device(device("server1")):
            b = tf.Variable(np.eye(size, dtype=np.float32) * 2.0, name="b")
            product = tf.matmul(a, b)
        with tf.device(device("driver")):
            total = tf.reduce_sum(product)
        init = tf.compat.v1.global_variables_initializer()
    return graph, init, total


def seed_own_generator(server: Any, job: str, task: int) -> None:
    """What `smpc.player.start_player` does: seed this player's SMPC generator locally."""
    import tensorflow as tf

    from smpc.compat import initialize_rng_states

    config = _config([f"/job:{job}/task:{task}"])
    with tf.compat.v1.Session(server.target, graph=tf.Graph(), config=config) as session:
        initialize_rng_states(session, [f"/job:{job}/replica:0/task:{task}/device:CPU:0"])


class Driver:
    def __init__(self, server: Any, job: str, tasks: list[str], cluster: dict[str, str]) -> None:
        self.server = server
        self.target = server.target
        self.cluster = cluster
        self.job = job
        self.tasks = tasks
        self.session: Any = None

    def device(self, name: str) -> str:
        return f"/job:{self.job}/replica:0/task:{self.tasks.index(name)}/device:CPU:0"

    def _session(self, graph: Any) -> Any:
        import tensorflow as tf

        devices = [f"/job:{self.job}/task:{i}" for i in range(len(self.tasks))]
        return tf.compat.v1.Session(self.target, graph=graph, config=_config(devices))

    def multiply(self, size: int, steps: int) -> dict[str, Any]:
        graph, init, total = product_graph(self.device, size)
        self.session = self._session(graph)
        self.session.run(init)
        self.session.run(total)  # first run registers the partitions
        start = time.perf_counter()
        for _ in range(steps):
            value = self.session.run(total)
        elapsed = time.perf_counter() - start
        return {"sum": float(value), "seconds_per_step": elapsed / steps}

    def read_file(self, path: str) -> dict[str, Any]:
        import tensorflow as tf

        graph = tf.Graph()
        with graph.as_default():
            with tf.device(self.device("server0")):
                content = tf.io.read_file(path)
        with self._session(graph) as session:
            try:
                return {"ok": True, "value": session.run(content).decode(errors="replace")}
            except tf.errors.OpError as exc:
                return {"ok": False, "error": type(exc).__name__, "message": exc.message}

    def propagate(self, size: int) -> dict[str, Any]:
        """Runs the product in a session that sends the cluster to the workers itself."""
        import tensorflow as tf

        # The master finds itself in a propagated cluster by its session target and refuses to
        # keep its booted job name, so new jobs name it and the players, at addresses of the
        # driver's choosing (here its own forwarders, which is why it would work at all).
        players = [n for n in self.tasks if n != "driver"]

        def device(name: str) -> str:
            if name == "driver":
                return "/job:propagated_driver/replica:0/task:0/device:CPU:0"
            return f"/job:propagated/replica:0/task:{players.index(name)}/device:CPU:0"

        graph, init, total = product_graph(device, size)
        config = _config()
        config.cluster_def.CopyFrom(
            tf.train.ClusterSpec({
                "propagated": [self.cluster[n] for n in players],
                "propagated_driver": [self.target.removeprefix("grpc://")],
            }).as_cluster_def()
        )
        with tf.compat.v1.Session(self.target, graph=graph, config=config) as session:
            try:
                session.run(init)
                return {"ok": True, "sum": float(session.run(total))}
            except tf.errors.OpError as exc:
                return {"ok": False, "error": type(exc).__name__, "message": exc.message}

    def steal(self, variable: str, size: int) -> dict[str, Any]:
        """Reads a player's variable by name from a fresh graph made of allowed ops only."""
        import tensorflow as tf

        graph = tf.Graph()
        with graph.as_default():
            with tf.device(self.device("server0")):
                handle = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[size, size], shared_name=variable)
                value = tf.raw_ops.ReadVariableOp(resource=handle, dtype=tf.float32)
            with tf.device(self.device("driver")):
                total = tf.reduce_sum(tf.identity(value))
        with self._session(graph) as session:
            try:
                return {"ok": True, "sum": float(session.run(total))}
            except tf.errors.OpError as exc:
                return {"ok": False, "error": type(exc).__name__, "message": exc.message}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--plain", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import tensorflow as tf

    from smpc.transport.gateway import Gateway, OpAllowList
    from smpc.transport.identity import load_identity
    from smpc.transport.loopback import ensure_loopback_only
    from smpc.transport.parties import Party, PartyDirectory

    spec = json.loads(args.spec.read_text())
    tasks: list[str] = spec["tasks"]
    raw = spec["raw_ports"]
    directory = PartyDirectory(
        Party(n, p["role"], Path(p["cert"]).read_bytes(), p.get("address"))
        for n, p in spec["parties"].items()
    )
    gateway = None
    cluster = {n: f"127.0.0.1:{raw[n]}" for n in tasks}
    if not args.plain:
        identity = load_identity(Path(spec["homes"][args.name]), args.name)
        gateway = Gateway(
            identity, directory,
            listen=directory.by_name(args.name).address, raw_port=raw[args.name],
            peers=[n for n in tasks if n != args.name],
            policy=OpAllowList(spec["allowed_ops"]),
            extra_handlers=[echo_handler(directory)],
        )
        cluster.update(gateway.start())
    server = tf.distribute.Server(
        tf.train.ClusterSpec({spec["job"]: [cluster[n] for n in tasks]}),
        job_name=spec["job"], task_index=tasks.index(args.name), config=_config(), start=True,
    )
    if not args.plain:
        ensure_loopback_only(raw[args.name])
    if args.name != "driver":
        seed_own_generator(server, spec["job"], tasks.index(args.name))
    driver = Driver(server, spec["job"], tasks, cluster)
    print(json.dumps({"ready": READY, "name": args.name, "cluster": cluster}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        cmd = command.pop("cmd")
        if cmd == "stop":
            break
        if cmd == "traffic":
            answer: Any = gateway.traffic() if gateway else {}
        elif cmd == "graphs":
            answer = [
                {"caller": g.caller, "digest": g.digest, "op_types": sorted(g.op_types)}
                for g in (gateway.registered_graphs() if gateway else [])
            ]
        else:
            answer = getattr(driver, cmd)(**command)
        print(json.dumps(answer), flush=True)
    if gateway is not None:
        gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
