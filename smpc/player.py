"""One SMPC player process: a TensorFlow gRPC server that holds its shares and computes on them.

Run as `python main.py smpc-player --name NAME --config players.json` (or `python -m smpc.player`).
At start-up it seeds its own secure random generator from this machine's CSPRNG, so no other
party ever knows its masks, then serves until stopped. Such a server executes any graph sent
to it: expose it only to the federation's hosts (see docs/smpc.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from smpc.errors import SmpcError
from smpc.players import DRIVER, PlayerConfig

logger = logging.getLogger(__name__)

READY = "SMPC player ready"


def start_player(name: str, config: PlayerConfig):  # -> tf.distribute.Server
    """Starts the server of player `name` and seeds its generator; returns the running server."""
    import tensorflow as tf

    from smpc.compat import initialize_rng_states, session_config

    if name == DRIVER or name not in config.names:
        raise SmpcError(
            f"'{name}' is not a player in the players file; players are {', '.join(config.names)}."
        )
    device = config.device(name)
    server_config = session_config()
    try:
        server = tf.distribute.Server(
            config.cluster_def(),
            job_name=config.job,
            task_index=config.task_index(name),
            config=server_config,
            start=True,
        )
    except (tf.errors.OpError, RuntimeError, ValueError) as exc:
        address = dict(config.players)[name]
        raise SmpcError(f"The SMPC player '{name}' could not listen on {address}.", detail=str(exc)) from exc
    own_only = session_config()
    # Talk to our own task only: the other players may not be up yet.
    own_only.device_filters.append(f"/job:{config.job}/task:{config.task_index(name)}")
    with tf.compat.v1.Session(server.target, graph=tf.Graph(), config=own_only) as sess:
        initialize_rng_states(sess, [device])
    return server


def run_player(name: str, config_path: Path) -> None:
    """Runs player `name` of `config_path` until the process is stopped."""
    config = PlayerConfig.load(config_path)
    server = start_player(name, config)
    logger.info("SMPC player %s serving %s at %s", name, config.device(name), dict(config.players)[name])
    print(f"{READY}: {name}", flush=True)
    server.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smpc-player", description="Run one MedFedChain SMPC player.")
    parser.add_argument("--name", required=True, help="this player's name in the players file")
    parser.add_argument("--config", required=True, type=Path, help="players.json of the federation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_player(args.name, args.config)
    except SmpcError as exc:
        print(
            exc.user_message if exc.detail is None else f"{exc.user_message} ({exc.detail})", file=sys.stderr
        )
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
