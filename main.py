"""MedFedChain entry point: the desktop app, or a command of the headless CLI.

    python main.py                      the app (a headless demo federation without a display)
    python main.py simulate ...         a whole federation of simulated hospitals
    python main.py evaluate ...         a robustness evaluation: datasets x attacks x defences x seeds
    python main.py smpc-player ...      one SMPC player of a secure consortium
    python main.py ledger audit|show    check or list the ledger
    python main.py node ...             run this machine's hospital in a consortium
    python main.py coordinator ...      run the consortium's coordinator
    python main.py account create|show  this machine's own ledger account (prints its address)
    python main.py tls create|show      this machine's TLS identity (prints its certificate's fingerprint)
    python main.py consortium init|add-hospital|show|check
                                        the signed consortium file of a real federation
    python main.py screenshot --out D   render every page of the app to PNG

Exit codes: 0 success; 1 unexpected error; 2 bad arguments or settings; 3 unusable data;
4 unusable model; 5 federation could not proceed; 6 round aborted; 7 local database problem;
8 ledger problem; 9 SMPC problem; 10 audit found a discrepancy; 11 system libraries missing for the
window; 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_AUDIT = 10
EXIT_SYSTEM_LIBRARIES = 11
EXIT_CANCELLED = 130

DEMO_ARGS = ["simulate", "--hospitals", "5", "--malicious", "1", "--attack", "label_flip", "--rounds", "3",
             "--dataset", "breast_cancer"]

LOG_FILE = "medfedchain.log"  # in the home directory, as the app's

log = logging.getLogger("medfedchain")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, help="data directory (default: MEDFED_HOME or the user data dir)")
    parser.add_argument("--db", type=Path, help="SQLite database file (default: HOME/medfedchain.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")


def build_parser() -> argparse.ArgumentParser:
    # The option lists are core's own; both modules are light (no TensorFlow), so --help stays quick.
    from core.data.partition import SCHEMES
    from core.federation.aggregators import AGGREGATORS

    parser = argparse.ArgumentParser(prog="medfedchain", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    # For the default command (no sub-command): the app, or the demo without a display.
    parser.add_argument("--home", dest="default_home", type=Path, help="data directory for the default command")
    parser.add_argument("--db", dest="default_db", type=Path, help="SQLite file for the default command")
    sub = parser.add_subparsers(dest="command")

    gui = sub.add_parser("gui", help="open the desktop app")
    _add_home(gui)
    gui.add_argument("--quit-after-shown", action="store_true",
                     help="quit once the window is shown, printing the seconds since start (tests, bench)")

    demo = sub.add_parser("demo", help="run the headless demo federation (one attacker, 3 rounds)")
    _add_home(demo)
    demo.add_argument("--json", type=Path, help="write the report here")

    sim = sub.add_parser("simulate", help="run a federation of simulated hospitals")
    _add_home(sim)
    sim.add_argument("--hospitals", type=int, default=5)
    sim.add_argument("--malicious", type=int, default=0, help="how many hospitals attack (the last ones)")
    sim.add_argument("--attack", default="none",
                     help="none, label_flip, sign_flip, scaling, noise, backdoor, the adaptive alie, min_max, "
                          "min_sum, ipm, constrain_scale, or FILE.py:CLASS")
    sim.add_argument("--attack-param", action="append", default=[], metavar="KEY=VALUE",
                     help="a parameter of the attack, e.g. factor=10 (repeatable)")
    sim.add_argument("--rounds", type=int, default=5)
    sim.add_argument("--dataset", default="breast_cancer",
                     help="breast_cancer, diabetes, synthetic_images, synthetic_tissue, "
                          "or a CSV/.npz/image or DICOM folder path")
    sim.add_argument("--label-column", help="the CSV column holding the class")
    sim.add_argument("--drop-columns", nargs="*", default=[], help="CSV columns to leave out (e.g. patient id)")
    sim.add_argument("--partition", default="iid", choices=SCHEMES)
    sim.add_argument("--alpha", type=float,
                     help="Dirichlet concentration of --partition dirichlet (default 0.5; smaller: "
                          "more skew)")
    sim.add_argument("--aggregator", default="fedavg", choices=AGGREGATORS)
    sim.add_argument("--verifier", default="plaintext", choices=["plaintext", "none"])
    sim.add_argument("--secure", action="store_true", help="verify and aggregate inside SMPC (TF-Encrypted)")
    sim.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    sim.add_argument("--batch-size", type=int, default=16)
    sim.add_argument("--learning-rate", type=float, default=0.005)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--rpc", help="record on this JSON-RPC node instead of the embedded chain")
    sim.add_argument("--no-ledger", action="store_true", help="record in SQLite only")
    sim.add_argument("--json", type=Path, help="write the report here")

    ev = sub.add_parser("evaluate", help="run a robustness evaluation: datasets x attacks x defences x seeds",
                        description="Runs every (dataset, partition, attack, defence, malicious fraction, seed) "
                        "federation, each with its reference (attackers left out) and clean (no attacker) "
                        "federation; writes OUT/results.json after each one (run again to resume), then "
                        "OUT/results.csv, OUT/figures/*.png and OUT/report.html.")
    _add_home(ev)
    ev.add_argument("--datasets", nargs="+", default=["breast_cancer"],
                    help="built-in names or CSV/.npz/image paths; 'all' for every built-in one")
    ev.add_argument("--attacks", nargs="+", required=True, help="attack names or FILE.py:CLASS; 'all' for every "
                    "built-in one")
    ev.add_argument("--defences", nargs="+", default=["all"],
                    help="verification (the majority verification), fedavg, krum, median, trimmed_mean, "
                         "fltrust; 'all' (default) for every one")
    ev.add_argument("--malicious-fraction", nargs="+", type=float, default=[0.4],
                    help="share of the hospitals that attack (and vote dishonestly)")
    ev.add_argument("--partition", nargs="+", default=["iid"], choices=SCHEMES)
    ev.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of --partition dirichlet")
    ev.add_argument("--rounds", type=int, default=5)
    ev.add_argument("--seeds", type=int, default=1, help="run seeds 0 .. S-1")
    ev.add_argument("--hospitals", type=int, default=5)
    ev.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--learning-rate", type=float, default=0.005)
    ev.add_argument("--out", type=Path, required=True, help="directory for the results and the report")

    player = sub.add_parser("smpc-player", help="run one SMPC player of a secure consortium (headless)")
    _add_home(player)
    player.add_argument("--consortium", required=True, type=Path, help="the signed consortium file")
    player.add_argument("--name", required=True, help="this player's name in the file: server0, server1 or server2")
    player.add_argument("--rpc", help="the consortium's ledger node (JSON-RPC URL)")

    ledger = sub.add_parser("ledger", help="inspect the ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    audit = ledger_sub.add_parser("audit", help="replay every event and check blobs, decisions and SQLite")
    _add_home(audit)
    audit.add_argument("--rpc", help="audit this JSON-RPC node instead of the embedded chain")
    audit.add_argument("--consortium", type=Path, help="a deployment site's consortium.json: audit its contract")
    audit.add_argument("--json", type=Path, help="write the audit report here")
    show = ledger_sub.add_parser("show", help="list rounds, models, votes and decisions")
    _add_home(show)
    show.add_argument("--rpc", help="read this JSON-RPC node instead of the embedded chain")
    show.add_argument("--consortium", type=Path, help="a deployment site's consortium.json: show its contract")

    account = sub.add_parser("account", help="this machine's own ledger account")
    account_sub = account.add_subparsers(dest="account_command", required=True)
    for name, text in (("create", "make this machine's encrypted account and print its address"),
                       ("show", "print this machine's account address")):
        _add_home(account_sub.add_parser(name, help=text))

    tls = sub.add_parser("tls", help="this machine's TLS identity for a secure (SMPC) consortium")
    tls_sub = tls.add_subparsers(dest="tls_command", required=True)
    tls_create = tls_sub.add_parser("create", help="make this machine's TLS key and certificate; print the "
                                                   "fingerprint and the certificate to send to the admin")
    _add_home(tls_create)
    tls_create.add_argument("--name", help="the party's name (default: the settings' hospital name), "
                                           "e.g. the hospital id, server0, server1, server2 or driver")
    _add_home(tls_sub.add_parser("show", help="print this machine's certificate fingerprint and file"))

    consortium = sub.add_parser("consortium", help="set up, extend, show or check the consortium file")
    consortium_sub = consortium.add_subparsers(dest="consortium_command", required=True)
    init = consortium_sub.add_parser("init", help="deploy the federation contract and write the signed file")
    _add_home(init)
    init.add_argument("--rpc", help="the ledger node's JSON-RPC URL (default: the settings' rpc_url)")
    init.add_argument("--out", type=Path, required=True, help="where to write consortium.json")
    init.add_argument("--name", required=True, help="the consortium's name")
    init.add_argument("--dataset", required=True, help="the agreed task's reference dataset (name or path)")
    init.add_argument("--label-column", help="the CSV column holding the class")
    init.add_argument("--drop-columns", nargs="*", default=[], help="CSV columns to leave out")
    init.add_argument("--architecture", choices=["tabular_cnn", "image_cnn"])
    init.add_argument("--coordinator", required=True, metavar="ADDRESS", help="the coordinator's account")
    init.add_argument("--coordinator-store", required=True, metavar="URL",
                      help="the coordinator's model store")
    init.add_argument("--commit-seconds", type=float, default=600.0)
    init.add_argument("--vote-seconds", type=float, default=600.0)
    init.add_argument("--aggregate-seconds", type=float, default=600.0)
    init.add_argument("--aggregator", default="fedavg",
                      choices=["fedavg", "krum", "median", "trimmed_mean", "fltrust"])
    init.add_argument("--policy", type=Path, metavar="FILE.json",
                      help="verification thresholds (default: the defaults)")
    init.add_argument("--smpc-player", action="append", default=[], metavar="NAME=HOST:PORT=CERT.pem",
                      help="a secure consortium's SMPC player (server0, server1 and server2, each once): where "
                           "its TLS gateway listens and the certificate its `tls create` made")
    init.add_argument("--smpc-driver", type=Path, metavar="CERT.pem",
                      help="the SMPC driver's certificate (with the three --smpc-player)")
    init.add_argument("--smpc-driver-address", metavar="HOST:PORT",
                      help="where the driver's gateway listens: the players fetch the values it feeds")
    add = consortium_sub.add_parser("add-hospital", help="register a hospital on chain and re-sign the file")
    _add_home(add)
    add.add_argument("--consortium", type=Path, required=True)
    add.add_argument("--rpc", help="the ledger node's JSON-RPC URL (default: the settings' rpc_url)")
    add.add_argument("address", help="the hospital's account address (from its `account create`)")
    add.add_argument("hospital_id", metavar="NAME", help="the hospital's id on the ledger")
    add.add_argument("--store-url", required=True, help="where the hospital's model store answers")
    add.add_argument("--tls-cert", type=Path, metavar="CERT.pem",
                     help="the hospital's TLS certificate from its `tls create` (required when secure)")
    show_c = consortium_sub.add_parser("show", help="print the file's contents once its signature is checked")
    show_c.add_argument("--consortium", type=Path, required=True)
    show_c.add_argument("-v", "--verbose", action="store_true")
    check = consortium_sub.add_parser("check", help="check the file, the chain and this machine's account")
    _add_home(check)
    check.add_argument("--consortium", type=Path, required=True)
    check.add_argument("--rpc", help="the ledger node's JSON-RPC URL (default: the settings' rpc_url)")
    check.add_argument("--dataset", help="also check that this hospital's dataset fits the model")
    check.add_argument("--label-column", help="the CSV column holding the class")
    check.add_argument("--drop-columns", nargs="*", default=[], help="CSV columns to leave out")
    check.add_argument("--party", metavar="NAME",
                       help="a secure consortium's SMPC party this home is (server0, server1, server2, driver "
                            "or a hospital id): check its TLS certificate; a player or driver needs no account")

    node = sub.add_parser("node", help="run this machine's hospital in a consortium (headless)")
    _add_home(node)
    node.add_argument("--consortium", type=Path, required=True, help="the signed consortium.json")
    node.add_argument("--dataset", required=True, help="this hospital's own data (a name or a path)")
    node.add_argument("--label-column", help="the CSV column holding the class")
    node.add_argument("--drop-columns", nargs="*", default=[], help="CSV columns to leave out")
    node.add_argument("--rpc", help="the ledger node's JSON-RPC URL (default: the settings' rpc_url)")
    node.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    node.add_argument("--batch-size", type=int, default=16)
    node.add_argument("--learning-rate", type=float, default=0.005)
    node.add_argument("--seed", type=int, default=0)
    node.add_argument("--until-round", type=int, help="exit once this round is final (default: run until stopped)")
    node.add_argument("--attack", help=argparse.SUPPRESS)  # a simulated attacker node, for tests and benchmarks
    node.add_argument("--attack-param", action="append", default=[], help=argparse.SUPPRESS)
    node.add_argument("--colluders", nargs="*", default=[], help=argparse.SUPPRESS)

    coord = sub.add_parser("coordinator", help="run the consortium's coordinator (headless)")
    _add_home(coord)
    coord.add_argument("--consortium", type=Path, required=True, help="the signed consortium.json")
    coord.add_argument("--rounds", type=int, required=True, help="run rounds 1..R, then exit")
    coord.add_argument("--rpc", help="the ledger node's JSON-RPC URL (default: the settings' rpc_url)")
    coord.add_argument("--seed", type=int, default=0, help="seed of round 1's initial model")
    coord.add_argument("--linger", type=float, default=60.0,
                       help="seconds to keep serving the models after the last round (default 60)")

    shot = sub.add_parser("screenshot", help="render every page of the app to PNG after a demo round")
    _add_home(shot)
    shot.add_argument("--out", type=Path, required=True)
    return parser


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    from core.errors import ConfigError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--attack-param expects KEY=VALUE, got '{item}'.")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _settings(args: argparse.Namespace) -> Any:
    from core.settings import load_settings

    return load_settings(home=getattr(args, "home", None), db=getattr(args, "db", None))


def _write_json(path: Path, payload: Any) -> None:
    from core.files import write_atomic

    write_atomic(path.resolve(), json.dumps(payload, indent=2, default=str))


class _ConsoleProgress:
    """Prints one line per step of the federation to stderr."""

    def __call__(self, event: Any) -> None:
        from core.progress import Stage

        if event.stage is Stage.TRAINING and event.values:
            return  # per-epoch lines would drown the table
        if event.stage is Stage.VERIFICATION and event.fraction not in (None, 0.0):
            return  # likewise one line per (validator, candidate) pair
        where = f"[round {event.round_number}] " if event.round_number else ""
        print(f"  {where}{event.stage.value:<12} {event.message}", file=sys.stderr, flush=True)


def _print_round(row: dict[str, Any]) -> None:
    acc = row["accuracy"]
    print(f"\nRound {row['round']}: global accuracy {acc:.3f}" if acc is not None else f"\nRound {row['round']}")
    print(f"  {'hospital':<12} {'truth':<9} {'status':<9} {'votes':<7} {'accuracy':>8} {'margin':>7} "
          f"{'cosine':>7} {'norm':>8}")
    for m in row["models"]:
        scores = list(m["scores"].values())
        mean = (lambda key: sum(s[key] for s in scores) / len(scores)) if scores else (lambda key: float("nan"))
        print(f"  {m['hospital']:<12} {'ATTACKER' if m['malicious'] else 'honest':<9} {m['status']:<9} "
              f"{m['accepts']}/{m['accepts'] + m['rejects']:<5} {mean('accuracy'):>8.3f} {mean('margin'):>7.2f} "
              f"{mean('cosine'):>7.2f} {mean('norm'):>8.3g}")
    for failure in row["failures"]:
        print(f"  ! {failure['hospital_id']} failed at {failure['stage']}: {failure['message']}")
    sys.stdout.flush()


def cmd_simulate(args: argparse.Namespace) -> int:
    from core.progress import CancelToken
    from core.services.simulation import SimulationConfig, run_simulation

    settings = _settings(args)
    config = SimulationConfig(
        hospitals=args.hospitals, malicious=args.malicious, attack=args.attack,
        attack_params=_parse_params(args.attack_param), rounds=args.rounds, dataset=args.dataset,
        label_column=args.label_column, drop_columns=tuple(args.drop_columns), partition=args.partition,
        alpha=args.alpha, aggregator=args.aggregator, verifier=args.verifier, secure=args.secure,
        seed=args.seed, local_epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, ledger=not args.no_ledger, rpc_url=args.rpc,
    )
    cancel = CancelToken()
    signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    print(f"MedFedChain simulation: {config.hospitals} hospitals ({config.malicious} x {config.attack}), "
          f"{config.rounds} rounds on {config.dataset}, "
          f"{'SMPC' if config.secure else config.verifier} verification, {config.aggregator}; "
          f"state in {settings.db_path}", flush=True)
    report = run_simulation(config, settings, _ConsoleProgress(), cancel, on_round=_print_round)
    s = report["summary"]
    print(f"\nFinal accuracy {report['final_accuracy']:.3f} (initial {report['initial_accuracy']:.3f}); "
          f"attackers rejected {s['malicious_rejected']}/{s['malicious_rejected'] + s['malicious_accepted']}, "
          f"honest accepted {s['honest_accepted']}/{s['honest_accepted'] + s['honest_rejected']}.")
    if args.json:
        _write_json(args.json, report)
        print(f"Report written to {args.json}")
    return EXIT_OK


class _ProgressBar:
    """The evaluation's progress as one bar line on stderr: redrawn in place on a terminal, one line
    per cell otherwise (a log file stays readable)."""

    width = 30

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._tty = sys.stderr.isatty()

    def __call__(self, event: Any) -> None:
        done, total = event.values.get("cells_done"), event.values.get("cells")
        if done is None or not total:
            print(f"  {event.message}", file=sys.stderr, flush=True)
            return
        filled = int(self.width * done / total)
        elapsed = time.monotonic() - self._started
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {int(done)}/{int(total)} cells, {elapsed / 60:.1f} min: " \
               f"{event.message}"
        print(("\r\x1b[2K" + line) if self._tty else line, end="" if self._tty else "\n", file=sys.stderr, flush=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.evaluation.report import write_report
    from core.progress import CancelToken
    from core.services.evaluation import EvaluationMatrix, run_evaluation

    from core.errors import ConfigError

    if args.seeds < 1:
        raise ConfigError(f"--seeds is the number of seeds to run (0 .. S-1): at least 1, got {args.seeds}.")
    settings = _settings(args)
    matrix = EvaluationMatrix(
        datasets=tuple(args.datasets), attacks=tuple(args.attacks), defences=tuple(args.defences),
        malicious_fractions=tuple(args.malicious_fraction), partitions=tuple(args.partition), alpha=args.alpha,
        rounds=args.rounds, seeds=tuple(range(args.seeds)), hospitals=args.hospitals, local_epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate)
    cancel = CancelToken()
    signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    cells = len(matrix.cells())
    print(f"MedFedChain evaluation: {cells} cells ({len(matrix.datasets)} datasets x {len(matrix.partitions)} "
          f"partitions x {len(matrix.attacks)} attacks x {len(matrix.defences)} defences x "
          f"{len(matrix.malicious_fractions)} fractions x {len(matrix.seeds)} seeds), {matrix.rounds} rounds of "
          f"{matrix.hospitals} hospitals; results in {args.out}", flush=True)
    done = run_evaluation(matrix, args.out, policy=settings.policy, progress=_ProgressBar(), cancel=cancel,
                          write_files=write_report)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for line in done.failed:
        print(f"medfedchain: warning: cell failed: {line}", file=sys.stderr)
    print(f"{len(done.results['cells'])} cells in {done.results_file} ({done.skipped} from an earlier run, "
          f"{done.ran} federations run now); report in {args.out / 'report.html'}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    parser = build_parser()
    demo_args = parser.parse_args(DEMO_ARGS)
    demo_args.home, demo_args.db, demo_args.json = args.home, args.db, args.json
    print("No display found: running the headless demo federation "
          "(5 hospitals, one label-flipping attacker, 3 rounds).", flush=True)
    return cmd_simulate(demo_args)


def _relaunch_under_shim() -> None:
    """A process whose TensorFlow server must stay on loopback starts again under the shim."""
    from smpc.relaunch import reexec_under_shim

    reexec_under_shim()


def _secure_file(path: Path) -> bool:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("smpc") is not None
    except (OSError, ValueError, AttributeError):
        return False  # the consortium check says what is wrong with the file


def cmd_player(args: argparse.Namespace) -> int:
    _relaunch_under_shim()
    from core.services.deployment import PlayerPlan, open_player

    site = open_player(PlayerPlan(consortium=args.consortium, name=args.name, rpc_url=args.rpc), _settings(args))
    print(f"SMPC player ready: {args.name}", flush=True)
    return _run_site(site, None)


def cmd_ledger(args: argparse.Namespace) -> int:
    from core.services import ledger_audit

    settings = _settings(args)
    if args.ledger_command == "audit":
        report = ledger_audit.audit(settings, rpc_url=args.rpc, consortium=args.consortium)
        print(ledger_audit.format_audit(report))
        if args.json:
            _write_json(args.json, ledger_audit.audit_as_dict(report))
        return EXIT_OK if report.ok else EXIT_AUDIT
    print(ledger_audit.format_show(ledger_audit.show(settings, rpc_url=args.rpc, consortium=args.consortium)))
    return EXIT_OK


def _password(*, confirm: bool) -> Callable[[], str]:
    """The keystore password, read only when a command needs it: MEDFED_KEYSTORE_PASSWORD, or typed."""
    import getpass

    from core.services.consortium import read_password

    return lambda: read_password(getpass.getpass if sys.stdin.isatty() else None, confirm=confirm)


def cmd_account(args: argparse.Namespace) -> int:
    from core.services import consortium

    settings = _settings(args)
    if args.account_command == "show":
        print(consortium.account_address(settings))
        return EXIT_OK
    result = consortium.create_account(settings, _password(confirm=True))
    if not result.created:
        print(f"medfedchain: note: {settings.keystore_dir} already holds this machine's account; kept it.",
              file=sys.stderr)
    print(result.address)
    return EXIT_OK


def cmd_tls(args: argparse.Namespace) -> int:
    from core.services import tls

    settings = _settings(args)
    creating = args.tls_command == "create"
    info = tls.create_tls_identity(settings, args.name) if creating else tls.tls_identity(settings)
    print(f"fingerprint  {info.fingerprint}")
    print(f"certificate  {info.cert_path}")
    if creating:
        print(f"medfedchain: send {info.cert_path} (never tls-key.pem) to the consortium's admin, who pins it "
              f"for '{info.name}'.", file=sys.stderr)
    return EXIT_OK


def _smpc_plan(args: argparse.Namespace) -> Any:
    """The --smpc-player / --smpc-driver flags of `consortium init` (None: a plain consortium)."""
    from core.errors import ConfigError
    from core.services.consortium import SmpcPlan

    if not args.smpc_player and args.smpc_driver is None:
        if args.smpc_driver_address:
            raise ConfigError("--smpc-driver-address needs a secure consortium (--smpc-player and "
                              "--smpc-driver).")
        return None
    if args.smpc_driver is None:
        raise ConfigError("A secure consortium needs the SMPC driver's certificate: --smpc-driver CERT.pem.")
    players = []
    for item in args.smpc_player:
        name, _, rest = item.partition("=")
        address, _, cert = rest.partition("=")
        if not name or not address or not cert:
            raise ConfigError(f"Invalid --smpc-player '{item}': expected NAME=HOST:PORT=CERT.pem, such as "
                              "server0=player0.example.org:4440=server0-cert.pem.")
        players.append((name.strip(), address.strip(), Path(cert)))
    return SmpcPlan(players=players, driver_cert=args.smpc_driver, driver_address=args.smpc_driver_address)


def cmd_consortium(args: argparse.Namespace) -> int:
    from core.federation.channel import RoundTiming
    from core.federation.policy import VerificationPolicy
    from core.services import consortium

    if args.consortium_command == "show":
        print(consortium.format_consortium(consortium.show_consortium(args.consortium)))
        return EXIT_OK
    settings = _settings(args)
    if args.consortium_command == "init":
        plan = consortium.ConsortiumPlan(
            name=args.name, dataset=args.dataset, coordinator=args.coordinator,
            coordinator_store_url=args.coordinator_store, architecture=args.architecture,
            timing=RoundTiming(args.commit_seconds, args.vote_seconds, args.aggregate_seconds),
            aggregator=args.aggregator,
            policy=consortium.load_policy_file(args.policy) if args.policy else VerificationPolicy(),
            label_column=args.label_column, drop_columns=tuple(args.drop_columns), smpc=_smpc_plan(args),
        )
        made = consortium.init_consortium(plan, settings=settings, rpc_url=args.rpc, out=args.out,
                                          password=_password(confirm=True))
        secure = " (secure: SMPC parties pinned to their TLS certificates)" if made.secure else ""
        print(f"Consortium '{made.name}'{secure}: contract {made.contract.address} on chain {made.chain_id}, "
              f"admin {made.admin}; written to {args.out}")
        return EXIT_OK
    if args.consortium_command == "add-hospital":
        made = consortium.add_hospital(args.consortium, settings=settings, rpc_url=args.rpc,
                                       address=args.address, hospital_id=args.hospital_id,
                                       store_url=args.store_url, password=_password(confirm=False),
                                       tls_cert=args.tls_cert)
        print(f"Hospital '{args.hospital_id}' ({args.address}) registered; {args.consortium} lists "
              f"{len(made.members)} member(s) and is re-signed.")
        return EXIT_OK
    if args.party:
        party = consortium.check_party(args.consortium, settings=settings, rpc_url=args.rpc, party=args.party)
        checked, fingerprint = party.consortium, party.tls_fingerprint
        where = (f"verified on chain {checked.chain_id}" if party.chain_checked
                 else "signed by its admin (the chain not checked: no --rpc)")
        verdict = f"Consortium '{checked.name}' {where}: this machine is its {party.party.role} '{args.party}'."
    else:
        site = consortium.check_consortium(args.consortium, settings=settings, rpc_url=args.rpc)
        checked, fingerprint = site.consortium, site.tls_fingerprint
        role = "coordinator" if site.hospital_id is None else f"hospital '{site.hospital_id}'"
        verdict = (f"Consortium '{checked.name}' verified on chain {checked.chain_id}: this machine "
                   f"({site.account}) is its {role}.")
    if args.dataset:
        consortium.check_dataset(checked, args.dataset, label_column=args.label_column,
                                 drop_columns=tuple(args.drop_columns))
    print(verdict)
    if fingerprint is not None:
        print(f"Its TLS certificate {fingerprint} is the one the consortium pinned for it.")
    return EXIT_OK


def _run_site(site: Any, until_round: int | None) -> int:
    from core.progress import CancelToken

    cancel = CancelToken()
    signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    signal.signal(signal.SIGTERM, lambda *_: cancel.cancel())
    try:
        print(f"MedFedChain {site.name}: following the consortium's rounds (Ctrl-C stops).", flush=True)
        if until_round is None:
            site.run(cancel)
        else:
            site.run(cancel, until_round=until_round)
    finally:
        site.close()
    return EXIT_CANCELLED if cancel.cancelled else EXIT_OK


def cmd_node(args: argparse.Namespace) -> int:
    from core.services.deployment import NodePlan, open_node

    settings = _settings(args)
    plan = NodePlan(consortium=args.consortium, dataset=args.dataset, label_column=args.label_column,
                    drop_columns=tuple(args.drop_columns), rpc_url=args.rpc, epochs=args.epochs,
                    batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                    attack=args.attack, attack_params=_parse_params(args.attack_param),
                    colluders=tuple(args.colluders))
    return _run_site(open_node(plan, settings, _ConsoleProgress()), args.until_round)


def cmd_coordinator(args: argparse.Namespace) -> int:
    if _secure_file(args.consortium):
        _relaunch_under_shim()  # the coordinator's process is then the SMPC driver
    from core.services.deployment import CoordinatorPlan, open_coordinator

    settings = _settings(args)
    plan = CoordinatorPlan(consortium=args.consortium, rounds=args.rounds, rpc_url=args.rpc, seed=args.seed,
                           linger_seconds=args.linger)
    return _run_site(open_coordinator(plan, settings, _ConsoleProgress()), None)


def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_gui(args: argparse.Namespace) -> int:
    from app.system_libraries import missing_libraries, missing_message

    missing = missing_libraries()
    if missing:  # Qt would abort with a plugin error that names none of them
        print(f"medfedchain: error: {missing_message(missing)}", file=sys.stderr)
        return EXIT_SYSTEM_LIBRARIES
    from app.application import run_app

    return run_app(_settings(args), quit_after_shown=args.quit_after_shown)


def cmd_screenshot(args: argparse.Namespace) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from app.screenshots import render_screenshots

    paths = render_screenshots(_settings(args), args.out)
    for path in paths:
        print(path)
    return EXIT_OK


class _ConsoleFormatter(logging.Formatter):
    """One line per record on stderr, `medfedchain: warning: ...`; tracebacks go to the log file only."""

    def format(self, record: logging.LogRecord) -> str:
        return f"medfedchain: {record.levelname.lower()}: {record.getMessage()}"


@contextmanager
def _logging(args: argparse.Namespace) -> Iterator[Path | None]:
    """Warnings (and with -v everything) to stderr, one line each; INFO and up, with tracebacks, to
    HOME/medfedchain.log. Yields the log file (None if the home cannot be made); undone on exit."""
    from core.settings import resolve_home

    root = logging.getLogger()
    verbose = bool(getattr(args, "verbose", False))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbose
                         else _ConsoleFormatter())
    handlers: list[logging.Handler] = [console]
    log_file: Path | None = None
    if args.command != "gui":  # the app keeps its own log file
        try:
            home = resolve_home(getattr(args, "home", None))
            home.mkdir(parents=True, exist_ok=True)
            log_file = home / LOG_FILE
            file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=2_000_000, backupCount=3,
                                                                encoding="utf-8")
        except Exception:  # noqa: BLE001 - no log file is no reason not to run; load_settings says why
            log_file = None
        else:
            file_handler.setLevel(logging.INFO)
            file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            handlers.append(file_handler)
    level = root.level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield log_file
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def _check_rpc(args: argparse.Namespace) -> None:
    """Every command's --rpc passes the settings' own check of a node URL."""
    from core.settings import check_rpc_url

    if getattr(args, "rpc", None) is not None:
        args.rpc = check_rpc_url(args.rpc)


def _exit_code(exc: BaseException) -> tuple[int, str]:
    """The documented exit code and one-line message for an error from any layer."""
    # Every package's root error (CoreError, LedgerError, SmpcError) carries both.
    code, message = getattr(exc, "exit_code", None), getattr(exc, "user_message", None)
    if isinstance(code, int) and isinstance(message, str):
        return code, message
    return EXIT_UNEXPECTED, f"Unexpected error: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    command = args.command
    if command is None:
        command = "gui" if _has_display() else "demo"
        chosen = [command]
        if args.default_home:
            chosen += ["--home", str(args.default_home)]
        if args.default_db:
            chosen += ["--db", str(args.default_db)]
        args = build_parser().parse_args(chosen)
    handlers = {"gui": cmd_gui, "demo": cmd_demo, "simulate": cmd_simulate, "evaluate": cmd_evaluate,
                "smpc-player": cmd_player,
                "ledger": cmd_ledger, "account": cmd_account, "tls": cmd_tls, "consortium": cmd_consortium,
                "node": cmd_node, "coordinator": cmd_coordinator,
                "screenshot": cmd_screenshot}
    with _logging(args) as log_file:
        return _run(handlers[command], args, log_file)


def _run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace,
         log_file: Path | None) -> int:
    try:
        _check_rpc(args)
        return handler(args)
    except BrokenPipeError:  # `... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("medfedchain: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # the CLI's one place that turns errors into exit codes
        code, message = _exit_code(exc)
        # The details (the cause, a traceback) go to the log file; stderr gets the one message.
        log.info("%s failed", args.command, exc_info=exc)
        if code == EXIT_UNEXPECTED and log_file is not None:
            message += f" (details in {log_file})"
        print(f"medfedchain: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
