"""Known answers for the optimizers: Adam against its formula, L-BFGS against BFGS and SciPy.

Every run goes through `optimizer_for`, as the Stylizer's does: small objectives written here take
(x, content, style, scales, norms) like the real one, their matrices travel in a `Targets`, and the
bounds are a (low, high) pair clipped to after each step.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

from stylecore.optimize import LBFGS, Optimizer, Targets, optimizer_for
from stylecore.options import StyleOptions

WIDE = (-1e6, 1e6)  # bounds that never bind


def quadratic(x, content, style, scales, norms, temporal=None):
    """½vᵀAv − bᵀv per image, v the flattened image; A = style["A"] (n, n), b = content["b"]."""
    v = tf.reshape(x, (tf.shape(x)[0], -1))  # (B, n)
    vav = tf.reduce_sum(v * tf.matmul(v, style["A"]), 1)  # A symmetric: vA = (Av)ᵀ
    return {"total": 0.5 * vav - tf.reduce_sum(v * content["b"], 1)}


def spd(n: int, condition: float, seed: int) -> np.ndarray:
    """A symmetric positive definite (n, n) matrix, eigenvalues 1…condition, random eigenvectors."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.geomspace(1.0, condition, n)) @ q.T


def quadratic_targets(a: np.ndarray, b: np.ndarray) -> Targets:
    """A and the rows of b as the objective's arguments (float32, like every target)."""
    return Targets({"b": tf.constant(b, tf.float32)}, {"A": tf.constant(a, tf.float32)}, {}, {})


@functools.cache
def quadratic_optimizer(options: StyleOptions) -> Optimizer:
    """One per options, as the Stylizer keeps them: targets are arguments, one graph serves all."""
    return optimizer_for(quadratic, options)


def trajectory(options: StyleOptions, targets: Targets, x0: np.ndarray, bounds, iterations: int):
    """The start and every iterate as float64 arrays, plus the Steps themselves."""
    steps = list(quadratic_optimizer(options).run(tf.constant(x0), targets, bounds, iterations))
    xs = [x0.astype(np.float64), *(s.image.numpy().astype(np.float64) for s in steps)]
    return xs, steps


# --- Adam -----------------------------------------------------------------------------------------


def adam_reference(xs, grads, o: StyleOptions, bounds) -> list[np.ndarray]:
    """x_t from x_{t−1} and g_{t−1} by Kingma & Ba's Adam in its efficient form (§2, end):
    α_t = α·√(1−β₂ᵗ)/(1−β₁ᵗ), x_t = clip(x_{t−1} − α_t·m_t/(√v_t + ε̂)), the option's ε as ε̂ (TF's
    and the seed recipe's convention; Algorithm 1's m̂/(√v̂ + ε) is this with ε̂ = ε·√(1−β₂ᵗ))."""
    m = v = 0.0
    out = []
    for t, (x, g) in enumerate(zip(xs, grads, strict=True), start=1):
        m = o.beta1 * m + (1 - o.beta1) * g
        v = o.beta2 * v + (1 - o.beta2) * g * g
        rate = o.step_size * np.sqrt(1 - o.beta2**t) / (1 - o.beta1**t)
        out.append(np.clip(x - rate * m / (np.sqrt(v) + o.epsilon), *bounds))
    return out


SHAPE = (1, 2, 2, 3)  # one image, 12 pixel values
N = int(np.prod(SHAPE))


def adam_problem():
    """A quadratic with curvatures 0.1…100, its minimizer's pixels ~N(0, 50²), a start in ±100."""
    rng = np.random.default_rng(7)
    a = spd(N, 1e3, seed=7) * 0.1
    b = (a @ rng.normal(0.0, 50.0, N))[None]
    x0 = rng.uniform(-100, 100, SHAPE).astype(np.float32)
    return a, b, x0


def gradients(a, b, xs) -> list[np.ndarray]:
    return [(x.reshape(-1) @ a - b[0]).reshape(SHAPE) for x in xs]


def test_adam_first_step_is_the_rate_times_g_over_g_plus_epsilon_hat():
    # t = 1: m = (1−β₁)g, v = (1−β₂)g², α₁ = α√(1−β₂)/(1−β₁), so x₁ = x₀ − α·g/(|g| + ε/√(1−β₂)):
    # every pixel moves by the rate against its gradient's sign, less where ε/√(1−β₂) ~ |g|.
    a, b, x0 = adam_problem()
    (g0,) = gradients(a, b, [x0.astype(np.float64)])
    o = StyleOptions(optimizer="adam", learning_rate=4.0)
    xs, _ = trajectory(o, quadratic_targets(a, b), x0, WIDE, 1)
    np.testing.assert_allclose(xs[1] - x0, -4.0 * np.sign(g0), rtol=1e-5, atol=1e-4)
    # ε/√(1−β₂) = |g| of a middle pixel: that pixel moves half the rate. (Algorithm 1's ε, beside
    # √v̂ = |g|, would weigh 1/√(1−β₂) ≈ 32× less and leave it at 3.88.)
    middle = np.unravel_index(np.argsort(np.abs(g0), axis=None)[N // 2], SHAPE)
    o = o.replace(epsilon=float(np.abs(g0[middle]) * np.sqrt(1 - o.beta2)))
    xs, _ = trajectory(o, quadratic_targets(a, b), x0, WIDE, 1)
    expected = x0 - 4.0 * g0 / (np.abs(g0) + o.epsilon / np.sqrt(1 - o.beta2))
    np.testing.assert_allclose(xs[1] - x0, expected - x0, rtol=1e-5, atol=1e-4)
    assert abs(xs[1] - x0)[middle] == pytest.approx(2.0, rel=1e-4)


# Our iterates are float32 and so is the bias correction, where 1 − β₂ᵗ subtracts two nearly
# equal numbers (β₂ᵗ ≈ 0.999). Measured: ≤ 1.0e-5 × the rate from the float64 formula in 6–8 steps.
ADAM_ATOL = 5e-5


@pytest.mark.parametrize(
    "change",
    [{}, {"learning_rate": 3.0, "beta1": 0.5, "beta2": 0.9, "epsilon": 0.05}],
    ids=["defaults", "other-rate-betas-epsilon"],
)
def test_adam_steps_follow_the_formula(change):
    a, b, x0 = adam_problem()
    o = StyleOptions(optimizer="adam", **change)
    xs, steps = trajectory(o, quadratic_targets(a, b), x0, WIDE, 6)
    reference = adam_reference(xs[:-1], gradients(a, b, xs[:-1]), o, WIDE)  # from our iterates
    np.testing.assert_allclose(np.stack(xs[1:]), reference, rtol=0, atol=ADAM_ATOL * o.step_size)
    # The losses a Step reports are those of the image before its update.
    before = [0.5 * x.reshape(-1) @ a @ x.reshape(-1) - b[0] @ x.reshape(-1) for x in xs[:-1]]
    np.testing.assert_allclose([s.losses["total"][0] for s in steps], before, rtol=1e-5)


def test_adam_clips_to_per_channel_bounds_and_keeps_its_moments():
    a, b, x0 = adam_problem()
    o = StyleOptions(optimizer="adam")
    # Per-channel bounds like the Stylizer's (−mean, 255 − mean), inside the unconstrained
    # minimizer's reach, so steps cross them; the start is inside. m and v go on unclipped.
    low, high = np.array([-20.0, -30.0, -40.0]), np.array([20.0, 30.0, 40.0])
    x0 = np.clip(x0, low + 1, high - 1).astype(np.float32)
    bounds = (tf.constant(low, tf.float32), tf.constant(high, tf.float32))
    xs, _ = trajectory(o, quadratic_targets(a, b), x0, bounds, 8)
    reference = adam_reference(xs[:-1], gradients(a, b, xs[:-1]), o, (low, high))
    np.testing.assert_allclose(np.stack(xs[1:]), reference, rtol=0, atol=ADAM_ATOL * o.step_size)
    on_bound = [int((np.isclose(x, low) | np.isclose(x, high)).sum()) for x in xs[1:]]
    assert min(on_bound) >= 3 and max(on_bound) < N  # measured 4…8 of the 12 at each step
    assert all(np.all((x >= low) & (x <= high)) for x in xs)
    unclipped = adam_reference(xs[:-1], gradients(a, b, xs[:-1]), o, WIDE)
    assert np.abs(np.stack(unclipped) - xs[1:]).max() > 1.0  # what ignoring the bounds would give


# --- L-BFGS: the two-loop recursion is BFGS's inverse Hessian -------------------------------------


def as_images(t: np.ndarray) -> tf.Tensor:
    """(…, N) vectors as (…, *SHAPE[1:]) float32 images."""
    return tf.constant(t.reshape(*t.shape[:-1], *SHAPE[1:]), tf.float32)


def bfgs_inverse_hessian(pairs, gamma: float) -> np.ndarray:
    """H from H₀ = γI by the BFGS update, oldest pair first: H ← (I − ρsyᵀ)H(I − ρysᵀ) + ρssᵀ."""
    n = len(pairs[0][0]) if pairs else 0
    h = gamma * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (y @ s)
        left = np.eye(n) - rho * np.outer(s, y)
        h = left @ h @ left.T + rho * np.outer(s, s)
    return h


def test_two_loop_is_the_bfgs_inverse_hessian_times_g():
    # Two images with their own histories (m = 4, oldest first); image 1's third entry is inert
    # (ρ = 0, as a pair that failed the curvature test is stored) and must be skipped.
    n, m = N, 4
    rng = np.random.default_rng(11)
    s = rng.normal(size=(m, 2, n))
    y = np.stack([s[:, i] @ spd(n, 30.0, seed=i) for i in range(2)], 1)  # yᵀs > 0
    y += 0.1 * rng.normal(size=y.shape)  # not one quadratic's pairs: the formula holds regardless
    rho = 1.0 / np.einsum("kbn,kbn->kb", s, y)
    rho[2, 1] = 0.0
    gamma, g = np.array([0.7, 0.2]), rng.normal(size=(2, n))
    lbfgs = quadratic_optimizer(StyleOptions(lbfgs_memory=m))
    assert isinstance(lbfgs, LBFGS)
    history = [as_images(t) for t in (g, s, y)] + [tf.constant(t, tf.float32) for t in (rho, gamma)]
    r = lbfgs._two_loop(*history).numpy().reshape(2, n)
    for i, kept in enumerate([range(m), (0, 1, 3)]):
        pairs = [(s[k, i], y[k, i]) for k in kept]
        expected = bfgs_inverse_hessian(pairs, gamma[i]) @ g[i]
        assert np.linalg.norm(r[i] - expected) <= 1e-5 * np.linalg.norm(expected)  # measured 1.3e-7
        # The order matters, so a recursion that took the pairs newest first would fail here.
        backwards = bfgs_inverse_hessian(pairs[::-1], gamma[i]) @ g[i]
        assert np.linalg.norm(r[i] - backwards) > 0.05 * np.linalg.norm(r[i])


def test_lbfgs_steps_are_minus_h_g_from_the_last_m_pairs_of_its_own_run():
    # The run's own history: sₖ = xₖ₊₁ − xₖ, yₖ = gₖ₊₁ − gₖ; step k uses the newest min(k − 1, m)
    # pairs, H₀ = (sᵀy/yᵀy of the newest)·I, and on step 1, with no pair, 10 px RMS along −g.
    n, m, iterations = N, 3, 8
    a = spd(n, 100.0, seed=3)
    b = (a @ np.random.default_rng(3).normal(0.0, 30.0, n))[None]
    x0 = np.zeros(SHAPE, np.float32)
    xs, _ = trajectory(StyleOptions(lbfgs_memory=m), quadratic_targets(a, b), x0, WIDE, iterations)
    x = [v.reshape(-1) for v in xs]
    g = [a @ v - b[0] for v in x]
    pairs = [(x[k + 1] - x[k], g[k + 1] - g[k]) for k in range(iterations)]
    for k in range(1, iterations + 1):
        known = pairs[max(0, k - 1 - m) : k - 1]
        if known:
            s, y = known[-1]
            expected = -bfgs_inverse_hessian(known, s @ y / (y @ y)) @ g[k - 1]
        else:
            expected = -LBFGS.FIRST_STEP / np.sqrt(np.mean(g[0] ** 2)) * g[0]
        # Measured ≤ 4.3e-6 (float32 against float64); a memory of m ± 1 pairs is off by ≥ 1.7e-2.
        step = x[k] - x[k - 1]
        assert np.linalg.norm(step - expected) <= 1e-4 * np.linalg.norm(step), f"step {k}"
    assert np.sqrt(np.mean((x[1] - x[0]) ** 2)) == pytest.approx(LBFGS.FIRST_STEP, rel=1e-5)


def test_lbfgs_falls_back_to_a_gradient_step_of_ten_pixels_rms_where_it_finds_no_curvature():
    # Where f is concave along the step (sᵀy ≤ 0), the docstring and the README say that "the step
    # falls back to the gradient scaled to move pixels by FIRST_STEP RMS". Here f = −½|x|², concave
    # everywhere: step 1 moves 10 px RMS; step 2 has no valid pair and should too.
    x0 = np.random.default_rng(5).normal(0.0, 1.0, SHAPE).astype(np.float32)
    targets = quadratic_targets(-np.eye(N), np.zeros((1, N)))
    xs, _ = trajectory(StyleOptions(), targets, x0, WIDE, 3)
    moved = np.sqrt(np.mean(np.diff(np.stack(xs), axis=0) ** 2, axis=(1, 2, 3, 4)))
    assert moved[0] == pytest.approx(LBFGS.FIRST_STEP, rel=1e-5)
    assert moved[1:].tolist() == pytest.approx([LBFGS.FIRST_STEP] * 2, rel=1e-3)


# --- L-BFGS on a strictly convex quadratic: the minimizer A⁻¹b ------------------------------------


# Unit steps, no line search (and a first step of 10 px RMS, whatever the scale): no n-step
# termination as with exact line searches, but the error falls superlinearly once the pairs span
# the spectrum. Measured over 20 problems each built as below (n = 8, |x*| ~ 85 px, start 0,
# float32): relative error below 1e-5 at iteration 11–15 (n + 3…7) for condition 10, below 1e-4
# at 27–36 (3.4n…4.5n) for condition 1000. SciPy's L-BFGS-B, Wolfe line search in float64, takes
# 12–15 and 23–34 on the same problems. The bars: the worst of ours plus 3 and 6 iterations.
@pytest.mark.parametrize(("condition", "tolerance", "bar"), [(10.0, 1e-5, 18), (1e3, 1e-4, 42)])
def test_lbfgs_reaches_the_minimizer_of_a_quadratic(condition, tolerance, bar):
    n, x0 = 8, np.zeros((1, 2, 2, 2), np.float32)
    for seed in (0, 1, 2):
        a = spd(n, condition, seed)
        x_star = np.random.default_rng(seed).normal(0.0, 30.0, n)
        xs, _ = trajectory(StyleOptions(), quadratic_targets(a, (a @ x_star)[None]), x0, WIDE, bar)
        error = [np.linalg.norm(x.reshape(-1) - x_star) / np.linalg.norm(x_star) for x in xs]
        # Seeds 0, 1, 2 measured: 14, 11, 13 iterations (condition 10); 32, 28, 28 (1000).
        assert min(error) < tolerance, f"seed {seed}: error {min(error):.1e} in {bar} iterations"


# --- L-BFGS against SciPy's L-BFGS-B, per iteration -----------------------------------------------


def gram(f: tf.Tensor) -> tf.Tensor:
    return tf.einsum("bijc,bijd->bcd", f, f) / (f.shape[1] * f.shape[2])  # (B, C, C)


def miniature_style_transfer(seed: int, scales: tuple[float, float, float]):
    """The real objective's shape in miniature: two random ReLU conv layers (the second after 2×2
    average pooling), content on the second, Grams of both, TV; a 16×16 start at the content."""
    rng = np.random.default_rng(seed)
    k1 = tf.constant(rng.normal(size=(3, 3, 3, 8)) / np.sqrt(27), tf.float32)
    k2 = tf.constant(rng.normal(size=(3, 3, 8, 16)) / np.sqrt(72), tf.float32)

    def features(x):
        f1 = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))
        return f1, tf.nn.relu(tf.nn.conv2d(tf.nn.avg_pool2d(f1, 2, 2, "VALID"), k2, 1, "SAME"))

    def mean_square(t):  # (B, …) → (B,)
        return tf.reduce_mean(tf.square(t), axis=tf.range(1, tf.rank(t)))

    def objective(x, content, style, w, norms, temporal=None):
        f1, f2 = features(x)
        c = w[0] * mean_square(f2 - content["f2"])
        s = w[1] * (mean_square(gram(f1) - style["g1"]) + mean_square(gram(f2) - style["g2"]))
        tv = w[2] * (mean_square(x[:, 1:] - x[:, :-1]) + mean_square(x[:, :, 1:] - x[:, :, :-1]))
        return {"content": c, "style": s, "tv": tv, "total": c + s + tv}

    content = tf.constant(rng.uniform(-100, 100, (1, 16, 16, 3)), tf.float32)
    style = features(tf.constant(rng.uniform(-100, 100, (1, 16, 16, 3)), tf.float32))
    grams = {"g1": gram(style[0]), "g2": gram(style[1])}
    targets = Targets({"f2": features(content)[1]}, grams, tf.constant(scales, tf.float32), {})
    return objective, targets, content.numpy()


def scipy_losses(objective, targets: Targets, x0: np.ndarray, bounds, o: StyleOptions, its: int):
    """f(x_k) after each of SciPy's L-BFGS-B iterations (maxcor = our memory), same f in float32."""
    args = targets.as_args()

    @tf.function
    def value_and_grad_tf(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = tf.reduce_sum(objective(x, *args)["total"])
        return f, tape.gradient(f, x)

    def value_and_grad(v):
        f, g = value_and_grad_tf(tf.constant(v.reshape(x0.shape), tf.float32))
        return float(f), g.numpy().reshape(-1).astype(np.float64)

    losses = []
    scipy.optimize.minimize(
        value_and_grad,
        x0.reshape(-1).astype(np.float64),
        jac=True,
        method="L-BFGS-B",
        bounds=[bounds] * x0.size,
        callback=lambda intermediate_result: losses.append(intermediate_result.fun),
        options={"maxiter": its, "maxcor": o.lbfgs_memory, "ftol": 0.0, "gtol": 0.0},
    )
    return np.array(losses)


# The README: "it matched SciPy's L-BFGS-B (with line search) per iteration". Measured on 30 such
# problems (seeds 0–9 × the 3 weightings (1, 1e-3, 1e-2), (1, 1e-2, 1e-2), (0.1, 1e-2, 0)), both
# from the content and within the same bounds ±110, our loss over SciPy's after k iterations:
# k = 1 0.51–12.6 (our first step is 10 px RMS, blind; SciPy's is chosen along its search),
# k = 5 0.80–2.35, k = 10 0.95–1.43, k = 20 0.97–1.17, k = 50 0.99–1.05; SciPy spent 51–54
# evaluations on 50 iterations, we 50. So the claim holds from about 10 iterations on, within
# 1.5×, tightening to 1.05× by 50; not over the first few.
# The bars: each k's worst case rounded up; ours no better than 0.75× SciPy's either. The two
# problems below, the worst early (seed 4) and a typical one (seed 0), measure 2.24, 1.31, 1.09,
# 1.03 and 1.23, 1.04, 1.01, 1.00 at k = 5, 10, 20, 50.
FACTORS = {5: 3.0, 10: 1.5, 20: 1.25, 50: 1.1}


@pytest.mark.parametrize(("seed", "scales"), [(4, (0.1, 1e-2, 0.0)), (0, (1.0, 1e-3, 1e-2))])
def test_lbfgs_matches_scipy_lbfgsb_per_iteration(seed, scales):
    objective, targets, x0 = miniature_style_transfer(seed, scales)
    o, bounds, its = StyleOptions(), (-110.0, 110.0), max(FACTORS)
    # Step k + 1 reports the loss of x_k, the image before its update.
    steps = list(optimizer_for(objective, o).run(tf.constant(x0), targets, bounds, its + 1))
    ours = np.array([s.losses["total"][0] for s in steps[1:]])
    theirs = scipy_losses(objective, targets, x0, bounds, o, its)
    f0 = float(objective(tf.constant(x0), *targets.as_args())["total"][0])
    assert len(theirs) == its and theirs[-1] < 0.5 * f0  # SciPy made all its iterations count
    ratios = {k: ours[k - 1] / theirs[k - 1] for k in FACTORS}
    for k, factor in FACTORS.items():
        assert 0.75 <= ratios[k] <= factor, f"after {k} iterations: {ratios[k]:.2f}× SciPy's loss"
