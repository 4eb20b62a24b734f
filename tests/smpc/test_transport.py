"""The SMPC transport played against: real TF servers in player and driver processes, each
under the loopback shim and behind its mTLS gateway, and outsiders, unpinned certificates, a
hospital, a curious driver and a player posing as master trying what they should not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from smpc.errors import GraphRefused, LoopbackUnavailable, SmpcError, UnknownParty
from smpc.transport.gateway import client_channel, protocol_op_types
from smpc.transport.graph_policy import OpAllowList, partition_digest, register_graph_def
from smpc.transport.identity import TlsIdentity, create_identity, dns_name, make_identity
from smpc.transport.loopback import (
    ensure_loopback_only,
    ensure_shim,
    is_loopback,
    listening_addresses,
    loopback_env,
)
from smpc.transport.parties import Party, PartyDirectory
from tests.smpc.transport_party import ECHO_METHOD, READY, product_graph
from tests.smpc.transport_smpc import protocol_graph as smpc_protocol_graph

ROOT = Path(__file__).resolve().parents[2]
JOB = "medfedchain"
TASKS = ["server0", "server1", "server2", "driver"]
SIZE = 64
ANSWER = float((np.arange(SIZE * SIZE, dtype=np.float32) / SIZE).sum() * 2.0)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _outward_address() -> str | None:
    """An address of this machine other than loopback (the UDP-connect trick sends nothing)."""
    for family, probe in ((socket.AF_INET, "192.0.2.255"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                address = s.getsockname()[0]
        except OSError:
            continue
        if not is_loopback(address):
            return address
    return None


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def _readline(stream: Any, timeout: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


class Federation:
    """The processes of one test cluster and the identities the test holds for adversaries."""

    def __init__(self, work: Path, *, plain: bool = False) -> None:
        self.work = work
        self.plain = plain
        self.identities: dict[str, TlsIdentity] = {}
        parties: dict[str, dict[str, Any]] = {}
        ports = _free_ports(2 * len(TASKS))
        self.public = {n: ports[i] for i, n in enumerate(TASKS)}
        self.raw = {n: ports[len(TASKS) + i] for i, n in enumerate(TASKS)}
        for name in [*TASKS, "hospital-a"]:
            home = work / name
            self.identities[name] = create_identity(home, name)
            role = "hospital" if name.startswith("hospital") else "driver" if name == "driver" else "player"
            address = None if role == "hospital" else f"127.0.0.1:{self.public[name]}"
            parties[name] = {"role": role, "cert": str(home / "tls-cert.pem"), "address": address}
        graph = product_graph(lambda n: f"/job:{JOB}/replica:0/task:{TASKS.index(n)}/device:CPU:0", SIZE)[0]
        self.allowed = sorted(protocol_op_types(graph) | protocol_op_types(smpc_protocol_graph()))
        self.spec = {
            "job": JOB, "tasks": TASKS, "parties": parties, "raw_ports": self.raw,
            "homes": {n: str(work / n) for n in TASKS}, "allowed_ops": self.allowed,
        }
        (work / "spec.json").write_text(json.dumps(self.spec))
        self.directory = PartyDirectory(
            Party(n, p["role"], Path(p["cert"]).read_bytes(), p["address"]) for n, p in parties.items()
        )
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self) -> None:
        for name in TASKS:
            base = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
            env = loopback_env([self.raw[name]], base)  # the plain baseline too: no port exposed
            command = [sys.executable, "-m", "tests.smpc.transport_party", "--spec",
                       str(self.work / "spec.json"), "--name", name, *(["--plain"] if self.plain else [])]
            self.procs[name] = subprocess.Popen(
                command, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=open(self.work / f"{name}.log", "w"), text=True,  # noqa: SIM115
            )
        self.clusters: dict[str, dict[str, str]] = {}
        for name, proc in self.procs.items():
            line = _readline(proc.stdout, 120)
            assert READY in line, f"{name} did not start: {(self.work / f'{name}.log').read_text()[-3000:]}"
            self.clusters[name] = json.loads(line)["cluster"]

    def ask(self, name: str, cmd: str, **args: Any) -> Any:
        proc = self.procs[name]
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        proc.stdin.flush()
        line = _readline(proc.stdout, 90)
        assert line, f"{name} gave no answer to {cmd}: {(self.work / f'{name}.log').read_text()[-3000:]}"
        return json.loads(line)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()

    def channel(self, as_party: str | TlsIdentity, to: str) -> grpc.Channel:
        identity = self.identities[as_party] if isinstance(as_party, str) else as_party
        return client_channel(identity, self.directory, to)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(tmp_path_factory.mktemp("transport"))
    federation.start()
    try:
        yield federation
    finally:
        federation.stop()


def _call(channel: grpc.Channel, method: str, request: bytes = b"", timeout: float = 5) -> bytes:
    return channel.unary_unary(method)(request, timeout=timeout)


# -- unit tests: parties, graph decoding and policy ---------------------------------------------


def test_directory_refuses_a_name_or_a_certificate_twice() -> None:
    a, b = make_identity("server0"), make_identity("server1")
    with pytest.raises(SmpcError, match="twice"):
        PartyDirectory([Party("server0", "player", a.cert_pem), Party("server0", "player", b.cert_pem)])
    with pytest.raises(SmpcError, match="same TLS certificate"):
        PartyDirectory([Party("server0", "player", a.cert_pem), Party("server1", "player", a.cert_pem)])
    directory = PartyDirectory(
        [Party("server0", "player", a.cert_pem, "h:1"), Party("h", "hospital", b.cert_pem)]
    )
    assert directory.by_fingerprint(b.fingerprint).name == "h"
    assert directory.trust_bundle().count(b"BEGIN CERTIFICATE") == 2
    with pytest.raises(UnknownParty):
        directory.by_name("server9")


def _register_request(graph_def: Any, *, split: bool = False) -> bytes:
    """A RegisterGraphRequest as the master sends it: session handle (1), graph_def (2), flags."""
    def field(number: int, payload: bytes) -> bytes:
        key, length = number << 3 | 2, len(payload)
        out = bytearray([key])
        while True:
            out.append(length & 0x7F | (0x80 if length > 0x7F else 0))
            length >>= 7
            if not length:
                return bytes(out) + payload
    nodes = list(graph_def.node)
    if not split:
        return field(1, b"session") + field(2, graph_def.SerializeToString()) + bytes([6 << 3, 1])
    from tensorflow.core.framework import graph_pb2

    first, second = graph_pb2.GraphDef(node=nodes[:1]), graph_pb2.GraphDef(node=nodes[1:])
    return field(2, first.SerializeToString()) + field(1, b"s") + field(2, second.SerializeToString())


def test_the_graph_of_a_registration_is_decoded_even_split_in_pieces() -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.io.read_file(tf.constant("/etc/passwd"))
    graph_def = graph.as_graph_def()
    policy = OpAllowList({"Const", "ReadFile"})  # even allowed explicitly, ReadFile stays denied
    for split in (False, True):
        decoded = register_graph_def(_register_request(graph_def, split=split))
        assert sorted(n.op for n in decoded.node) == ["Const", "ReadFile"]
        with pytest.raises(GraphRefused) as refused:
            policy(decoded)
        assert refused.value.op_types == {"ReadFile"}
    with pytest.raises(GraphRefused, match="malformed"):
        register_graph_def(b"\x12\xff\xff\xff\x0f")
    shuffled = type(graph_def)()
    shuffled.CopyFrom(graph_def)
    del shuffled.node[:]
    shuffled.node.extend(reversed(graph_def.node))
    assert partition_digest(shuffled) == partition_digest(graph_def)


def test_an_op_hidden_in_a_library_function_is_refused() -> None:
    import tensorflow as tf

    @tf.function
    def sneaky(path: tf.Tensor) -> tf.Tensor:
        return tf.io.read_file(path)

    graph = tf.Graph()
    with graph.as_default():
        sneaky(tf.constant("/etc/passwd"))
    graph_def = graph.as_graph_def()
    top = {n.op for n in graph_def.node}
    assert "ReadFile" not in top  # only a call node at the top level
    with pytest.raises(GraphRefused) as refused:
        OpAllowList(top | {"Placeholder", "_Arg", "_Retval", "Identity"})(graph_def)
    assert "ReadFile" in refused.value.op_types


def test_the_allow_list_refuses_ops_outside_the_protocol() -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.strings.format("{}", [tf.constant(1)])
    with pytest.raises(GraphRefused, match="not part of the protocol") as refused:
        OpAllowList({"Const"})(graph.as_graph_def())
    assert refused.value.op_types == {"StringFormat"}


def test_the_shim_is_built_once_and_appended_to_ld_preload(monkeypatch: pytest.MonkeyPatch) -> None:
    shim = ensure_shim()
    assert shim.is_file() and ensure_shim() == shim
    env = loopback_env([1234, 5678], {"LD_PRELOAD": "/lib/other.so", "MEDFEDCHAIN_LOOPBACK_PORTS": "99"})
    assert env["LD_PRELOAD"] == f"/lib/other.so {shim}"
    assert env["MEDFEDCHAIN_LOOPBACK_PORTS"] == "99,1234,5678"
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(LoopbackUnavailable, match="firewall"):
        ensure_shim()


def test_a_gateway_listens_on_exactly_its_address_and_stops_cleanly(tmp_path: Path) -> None:
    from smpc.transport.gateway import Gateway
    from tests.smpc.transport_party import echo_handler

    player, hospital = make_identity("server0"), make_identity("hospital-a")
    port = _free_ports(1)[0]
    directory = PartyDirectory([
        Party("server0", "player", player.cert_pem, f"127.0.0.1:{port}"),
        Party("hospital-a", "hospital", hospital.cert_pem),
    ])
    with pytest.raises(UnknownParty, match="not the one the consortium pinned"):
        Gateway(make_identity("server0"), directory, listen=f"127.0.0.1:{port}")
    gateway = Gateway(player, directory, listen=f"127.0.0.1:{port}", extra_handlers=[echo_handler(directory)])
    gateway.start()
    try:
        assert listening_addresses(port) == ["127.0.0.1"]
        with client_channel(hospital, directory, "server0") as ch:
            assert _call(ch, ECHO_METHOD, b"x") == b"hospital-a:x"
    finally:
        gateway.stop()
    assert listening_addresses(port) == []


# -- the adversary against real processes ----------------------------------------------------


@pytest.mark.slow
def test_a_cross_device_product_runs_through_the_gateways(federation: Federation) -> None:
    result = federation.ask("driver", "multiply", size=SIZE, steps=5)
    assert result["sum"] == pytest.approx(ANSWER, rel=1e-6)
    # every registered partition is recorded by digest, with the ops that really appear
    graphs = {n: federation.ask(n, "graphs") for n in ("server0", "server1")}
    assert all(g["caller"] == "driver" and len(g["digest"]) == 64 for gs in graphs.values() for g in gs)
    ops = {op for gs in graphs.values() for g in gs for op in g["op_types"]}
    print("ops in registered partitions:", sorted(ops))
    assert {"_Recv", "_Send", "MatMul"} <= ops <= set(federation.allowed)


@pytest.mark.slow
def test_traffic_counters_count_the_bytes_of_the_product(federation: Federation) -> None:
    federation.ask("driver", "multiply", size=SIZE, steps=1)
    tensor = SIZE * SIZE * 4  # server0's variable travels to server1 every step
    server1 = federation.ask("server1", "traffic")
    assert server1["server0"]["received"] >= tensor
    assert server1["driver"]["received"] > 0 and server1["driver"]["sent"] > 0
    driver = federation.ask("driver", "traffic")
    assert driver["server0"]["sent"] > 0 and driver["server1"]["received"] > 0


@pytest.mark.slow
def test_an_outsider_without_a_pinned_certificate_gets_nothing(federation: Federation) -> None:
    import tensorflow as tf

    address = f"127.0.0.1:{federation.public['server0']}"
    get_status = "/tensorflow.WorkerService/GetStatus"
    with grpc.insecure_channel(address) as plain, pytest.raises(grpc.RpcError) as no_tls:
        _call(plain, get_status)
    assert no_tls.value.code() == grpc.StatusCode.UNAVAILABLE
    # TLS that trusts the player, but no client certificate
    pinned = federation.directory.by_name("server0").cert_pem
    anonymous = grpc.ssl_channel_credentials(root_certificates=pinned)
    options = [("grpc.ssl_target_name_override", dns_name("server0"))]
    with grpc.secure_channel(address, anonymous, options=options) as ch, pytest.raises(grpc.RpcError) as anon:
        _call(ch, get_status)
    assert anon.value.code() == grpc.StatusCode.UNAVAILABLE
    # a certificate it made itself, even one claiming a pinned name
    impostor = make_identity("server1")
    with federation.channel(impostor, "server0") as ch, pytest.raises(grpc.RpcError) as unpinned:
        _call(ch, get_status)
    assert unpinned.value.code() == grpc.StatusCode.UNAVAILABLE
    # and a TensorFlow client pointed at the public port cannot read the player's variable
    federation.ask("driver", "multiply", size=SIZE, steps=1)
    graph = tf.Graph()
    with graph.as_default(), tf.device(f"/job:{JOB}/replica:0/task:0/device:CPU:0"):
        handle = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[SIZE, SIZE], shared_name="a")
        value = tf.raw_ops.ReadVariableOp(resource=handle, dtype=tf.float32)
    config = tf.compat.v1.ConfigProto(operation_timeout_in_ms=3000)
    with tf.compat.v1.Session(f"grpc://{address}", graph=graph, config=config) as session:
        with pytest.raises(tf.errors.OpError):
            session.run(value)


@pytest.mark.slow
def test_a_certificate_signed_by_a_pinned_key_does_not_pass_for_a_party(federation: Federation) -> None:
    """Pinned certificates are CA certificates; a leaf a hospital signs with its pinned key
    chains to a pinned root, so TLS lets it in, but it names no party."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    hospital = federation.identities["hospital-a"]
    issuer_key = serialization.load_pem_private_key(hospital.key_pem, None)
    issuer = x509.load_pem_x509_certificate(hospital.cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "driver")]))
        .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    forged = TlsIdentity(
        "driver",
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
        leaf.public_bytes(serialization.Encoding.PEM) + hospital.cert_pem,
    )
    with federation.channel(forged, "server0") as ch:
        with pytest.raises(grpc.RpcError) as worker:
            _call(ch, "/tensorflow.WorkerService/GetStatus")
        with pytest.raises(grpc.RpcError):
            _call(ch, ECHO_METHOD, b"hi")  # the extra service's `caller` refuses it too
    assert worker.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not pinned" in (worker.value.details() or "")


@pytest.mark.slow
def test_a_hospital_reaches_the_extra_service_but_not_the_worker(federation: Federation) -> None:
    with federation.channel("hospital-a", "server0") as ch:
        assert _call(ch, ECHO_METHOD, b"hello") == b"hospital-a:hello"
        with pytest.raises(grpc.RpcError) as worker:
            _call(ch, "/tensorflow.WorkerService/GetStatus")
    assert worker.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "hospital" in (worker.value.details() or "")


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    "/tensorflow.MasterService/CreateSession",
    "/tensorflow.MasterService/ListDevices",
    "/tensorflow.eager.EagerService/CreateContext",
    "/tensorflow.eager.EagerService/StreamingEnqueue",
    "/medfedchain.Unknown/Method",
])
def test_the_driver_cannot_use_a_players_master_or_eager_service(federation: Federation, method: str) -> None:
    with federation.channel("driver", "server0") as ch, pytest.raises(grpc.RpcError) as refused:
        _call(ch, method)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert method in (refused.value.details() or "")


@pytest.mark.slow
def test_a_player_cannot_act_as_master_of_another(federation: Federation) -> None:
    with federation.channel("server1", "server0") as ch:
        for method in ("RegisterGraph", "RunGraph", "CreateWorkerSession"):
            with pytest.raises(grpc.RpcError) as refused:
                _call(ch, f"/tensorflow.WorkerService/{method}")
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        _call(ch, "/tensorflow.WorkerService/GetStatus")  # what a peer worker may ask, it may


@pytest.mark.slow
def test_a_graph_reading_a_file_on_a_player_is_refused_with_a_clear_error(federation: Federation) -> None:
    refused = federation.ask("driver", "read_file", path="/etc/hostname")
    assert refused["ok"] is False and refused["error"] == "PermissionDeniedError"
    assert "server0" in refused["message"] and "ReadFile" in refused["message"]
    assert federation.ask("driver", "multiply", size=SIZE, steps=1)["sum"] == pytest.approx(ANSWER, rel=1e-6)


@pytest.mark.slow
def test_a_session_cannot_hand_players_its_own_cluster_addresses(federation: Federation) -> None:
    """ClusterSpec propagation would make a player dial whatever addresses the driver names."""
    refused = federation.ask("driver", "propagate", size=SIZE)
    assert refused["ok"] is False and refused["error"] == "PermissionDeniedError", refused
    assert "ClusterSpec propagation" in refused["message"]


@pytest.mark.slow
def test_a_pinned_driver_can_still_read_a_variable_by_name(federation: Federation) -> None:
    """NOT enforced, and documented: a graph of allowed ops may read any variable by name."""
    federation.ask("driver", "multiply", size=SIZE, steps=1)
    stolen = federation.ask("driver", "steal", variable="a", size=SIZE)
    assert stolen["ok"] is True and stolen["sum"] == pytest.approx(ANSWER / 2, rel=1e-6)


@pytest.mark.slow
def test_any_local_process_can_use_a_partys_outbound_forwarders(federation: Federation) -> None:
    """NOT enforced, and documented: the party's own machine is its trust domain."""
    forwarder = federation.clusters["driver"]["server0"]
    with grpc.insecure_channel(forwarder) as ch:
        _call(ch, "/tensorflow.WorkerService/GetStatus")  # reaches server0, as the driver
    assert federation.ask("server0", "traffic")["driver"]["received"] > 0


@pytest.mark.slow
def test_the_raw_port_listens_on_loopback_only_and_only_thanks_to_the_shim(
    federation: Federation, tmp_path: Path
) -> None:
    outward = _outward_address()
    raw = federation.raw["server0"]
    listening = listening_addresses(raw)
    assert listening and all(is_loopback(a) for a in listening), listening
    ensure_loopback_only(raw)
    assert _connects("127.0.0.1", raw)
    if outward is not None:
        assert not _connects(outward, raw)
    # the same TF server without the shim listens on every address
    port = _free_ports(1)[0]
    script = (
        "import sys, tensorflow as tf\n"
        f"s = tf.distribute.Server(tf.train.ClusterSpec({{'j': ['127.0.0.1:{port}']}}), job_name='j', "
        "task_index=0, start=True)\nprint('up', flush=True)\nsys.stdin.readline()\n"
    )
    bare = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        assert _readline(bare.stdout, 120).startswith("up")
        exposed = [a for a in listening_addresses(port) if not is_loopback(a)]
        assert exposed, listening_addresses(port)
        with pytest.raises(SmpcError, match="reachable from other machines"):
            ensure_loopback_only(port)
        if outward is not None:
            assert _connects(outward, port)
    finally:
        bare.kill()
        bare.wait()
    if outward is None:
        pytest.skip("this machine has no non-loopback address to connect from")


@pytest.mark.slow
def test_the_overhead_of_the_gateways_is_measured(federation: Federation, tmp_path: Path) -> None:
    """The same product through the gateways and with the TF servers talking directly."""
    plain = Federation(tmp_path, plain=True)
    plain.start()
    try:
        report: dict[str, Any] = {}
        for size, steps in ((SIZE, 20), (512, 5)):
            before = federation.ask("server1", "traffic").get("server0", {}).get("received", 0)
            secured = federation.ask("driver", "multiply", size=size, steps=steps)
            moved = federation.ask("server1", "traffic")["server0"]["received"] - before
            direct = plain.ask("driver", "multiply", size=size, steps=steps)
            assert secured["sum"] == pytest.approx(direct["sum"], rel=1e-6)
            assert moved >= (steps + 1) * size * size * 4  # server0's matrix, once per step
            report[f"{size}x{size}"] = {
                "ms_per_step_gateways": round(1000 * secured["seconds_per_step"], 2),
                "ms_per_step_direct": round(1000 * direct["seconds_per_step"], 2),
                "bytes_server0_to_server1": moved,
            }
        print("transport overhead:", json.dumps(report))
    finally:
        plain.stop()


def test_the_protocol_graph_of_an_smpc_session_uses_no_denied_op() -> None:
    """The deny list must not refuse what tf-encrypted's SecureNN itself builds."""
    from core.models.architecture import tabular_cnn_spec
    from core.models.training import initial_weights
    from smpc.session import SmpcSession
    from smpc.transport.graph_policy import is_denied

    spec = tabular_cnn_spec(12, 2)
    session = SmpcSession(spec, batch_size=8, validator_capacity=1)
    try:
        session.open([w.shape for w in initial_weights(spec, 3)])
        ops = protocol_op_types(session._graph)  # noqa: SLF001 - the graph the players would see
    finally:
        session.close()
    assert {"MatMul", "StatefulUniformFullInt", "_Send", "_Recv"} <= ops
    assert not [op for op in ops if is_denied(op)]


def test_the_loopback_check_fails_closed_when_nothing_listens() -> None:
    with pytest.raises(LoopbackUnavailable):
        ensure_loopback_only(_free_ports(1)[0])

