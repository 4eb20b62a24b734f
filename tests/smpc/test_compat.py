"""The compatibility layer: tf-encrypted imports on TF 2.21 and draws its masks securely."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import stats

from smpc.compat import SECURE_RANDOM, graph_rng_devices, initialize_rng_states, session_config, tfe


def test_tf_encrypted_imports_with_secure_randomness_in_place() -> None:
    from tf_encrypted.operations.secure_random import secure_random

    assert secure_random.supports_seeded_randomness()
    assert secure_random.secure_random_module is SECURE_RANDOM
    assert hasattr(tfe.protocol, "SecureNN")


def _graph_with_private(values: np.ndarray):
    graph = tf.Graph()
    with graph.as_default():
        tfe.set_config(tfe.LocalConfig(["server0", "server1", "server2"]))
        prot = tfe.protocol.SecureNN()
        x = prot.define_private_variable(tf.constant(values))
        relu = prot.relu(x).reveal()
        out = (
            x.share0.value,
            x.share1.value,
            relu.value_on_0.value,
            prot.greater(x, 0.0).reveal().value_on_0.value,
        )
        init = tf.compat.v1.global_variables_initializer()
        seed = SECURE_RANDOM.secure_seed()
    tfe.set_protocol(None)
    return graph, out, init, seed


def test_seeds_are_fresh_per_run_and_per_session() -> None:
    graph, _, _, seed = _graph_with_private(np.zeros(3))
    draws = []
    for _ in range(2):
        with tf.compat.v1.Session(graph=graph, config=session_config()) as sess:
            initialize_rng_states(sess, graph_rng_devices(graph))
            draws += [tuple(sess.run(seed)), tuple(sess.run(seed))]
    assert len(set(draws)) == 4


def test_in_graph_sharing_reconstructs_and_hides_the_secret() -> None:
    n = 4000
    values = np.concatenate([np.full(n // 2, -1.5), np.full(n // 2, 700.25)])
    graph, (s0, s1, relu, greater), init, _ = _graph_with_private(values)
    with tf.compat.v1.Session(graph=graph, config=session_config()) as sess:
        initialize_rng_states(sess, graph_rng_devices(graph))
        sess.run(init)
        a, b, r, g = sess.run([s0, s1, relu, greater])
    from smpc.fixedpoint import FIXED64, reconstruct

    np.testing.assert_allclose(FIXED64.decode(reconstruct(a, b)), values, atol=FIXED64.resolution)
    np.testing.assert_allclose(FIXED64.decode(r), np.maximum(values, 0.0), atol=FIXED64.resolution)
    np.testing.assert_array_equal(g, (values > 0).astype(np.int64))
    # One share of -1.5 and one share of 700.25 are indistinguishable (KS on the ring).
    unit = b.view(np.uint64).astype(np.float64) / 2.0**64
    assert stats.ks_2samp(unit[: n // 2], unit[n // 2 :]).pvalue > 1e-6
    assert stats.kstest(unit, "uniform").pvalue > 1e-6
