"""This machine's measured matmul peak per precision: the GFLOP/s a large dense matmul reaches."""

from __future__ import annotations

import time

import tensorflow as tf


def matmul_peak(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of the fastest of `repeats` n×n matmuls in `dtype` (2·n³ FLOPs each), after a
    warm-up: the most this machine's TensorFlow does per second in that precision."""
    a = tf.random.stateless_normal((n, n), (1, 2), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    run = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32)))
    run(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def peaks(precisions: tuple[str, ...] = ("float32", "bfloat16")) -> dict[str, float]:
    """{precision: GFLOP/s} for each precision."""
    return {p: matmul_peak(p) for p in precisions}


if __name__ == "__main__":
    for name, gflops in peaks().items():
        print(f"{name}: {gflops:.0f} GFLOP/s")
