"""Known answers for the losses: Gram of a hand-made tensor, TV of a checkerboard, and friends."""

import numpy as np
import pytest
import tensorflow as tf

from stylecore.losses import content_loss, gram, layer_weights, style_loss, tv_loss


def test_gram_of_a_hand_made_tensor():
    # One image, 1×2 pixels, 2 channels: F = [[1, 2], [3, 4]] (rows are pixels).
    f = tf.constant([[[[1.0, 2.0], [3.0, 4.0]]]])
    expected = np.array([[1 + 9, 2 + 12], [2 + 12, 4 + 16]]) / (1 * 2 * 2)
    np.testing.assert_allclose(gram(f).numpy()[0], expected)


def test_gram_is_per_image():
    a = tf.ones((1, 2, 2, 3))
    b = 2 * tf.ones((1, 2, 2, 3))
    g = gram(tf.concat([a, b], 0)).numpy()
    np.testing.assert_allclose(g[0], np.full((3, 3), 4 / 12))
    np.testing.assert_allclose(g[1], np.full((3, 3), 16 / 12))


def test_gram_gradient_is_the_textbook_one_with_an_asymmetric_upstream():
    # ∂⟨W, FᵀF/n⟩/∂F = F(W + Wᵀ)/n, per image; W is not symmetric, so a gradient that assumed a
    # symmetric dG (or dropped one factor's share) would miss.
    rng = np.random.default_rng(3)
    f = rng.standard_normal((2, 3, 5, 4))
    w = rng.standard_normal((2, 4, 4))
    ft = tf.constant(f, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(ft)
        total = tf.reduce_sum(gram(ft) * w)
    flat = f.reshape(2, 15, 4)
    expected = np.einsum("bnc,bcd->bnd", flat, w + w.transpose(0, 2, 1)) / 60
    np.testing.assert_allclose(
        tape.gradient(total, ft).numpy(), expected.reshape(f.shape), rtol=1e-5, atol=1e-6
    )


def test_tv_of_a_checkerboard():
    # A 0/1 checkerboard changes by 1 between every pair of neighbours: mean(Δy²) = mean(Δx²) = 1.
    board = (np.indices((4, 6)).sum(axis=0) % 2).astype(np.float32)
    images = tf.constant(np.repeat(board[None, :, :, None], 3, axis=3))
    assert tv_loss(images).numpy() == pytest.approx([2.0])
    assert tv_loss(tf.zeros((2, 5, 5, 3))).numpy().tolist() == [0.0, 0.0]


def test_tv_of_a_ramp():
    ramp = np.tile(np.arange(5, dtype=np.float32) * 3, (4, 1))  # Δx = 3, Δy = 0
    images = tf.constant(ramp[None, :, :, None])
    assert tv_loss(images).numpy() == pytest.approx([9.0])


def test_content_loss_is_zero_at_the_content_and_weighted():
    f = {"relu4_2": tf.random.stateless_normal((2, 3, 3, 4), seed=(1, 2))}
    assert content_loss(f, f, {"relu4_2": 1.0}).numpy().tolist() == [0.0, 0.0]
    shifted = {"relu4_2": f["relu4_2"] + 2.0}
    assert content_loss(shifted, f, {"relu4_2": 0.5}).numpy() == pytest.approx([2.0, 2.0])


def test_style_loss_known_answer():
    f = {"relu1_1": tf.ones((1, 2, 2, 3))}  # Gram = 1/3 everywhere
    target = {"relu1_1": tf.zeros((1, 3, 3))}
    assert style_loss(f, target, {"relu1_1": 1.0}).numpy() == pytest.approx([1 / 9])
    assert style_loss(f, {"relu1_1": gram(f["relu1_1"])}, {"relu1_1": 1.0}).numpy() == [0.0]


def test_layer_weights():
    assert layer_weights(4) == [0.25] * 4
    assert layer_weights(2, (3.0, 1.0)) == [0.75, 0.25]
    assert layer_weights(3, exponent=2.0) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
