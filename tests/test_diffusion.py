"""EDM pieces against closed forms, the Heun sampler on Gaussian mixtures with their exact
denoisers, inpainting, intermediates, batching, and a short training run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax.config import DiffusionConfig
from edis_jax.diffusion import edm, model, sampler

PAPER = DiffusionConfig()
TINY = DiffusionConfig(
    width=32, depth=2, dim_t=16, batch_size=64, train_steps=200, train_chunk=100, num_steps=16,
    sample_batch=256,
)  # fmt: skip


def _with(cfg, **changes):
    return dataclasses.replace(cfg, **changes)


def gmm_denoiser(weights, means, stds):
    """The exact D(x; sigma) = E[x0 | x0 + sigma n = x] of an isotropic Gaussian mixture."""
    w, mu, s = (jnp.asarray(a, jnp.float32) for a in (weights, means, stds))

    def denoise(x, sigma):
        var = s**2 + sigma**2  # (C,): each component convolved with the noise
        d2 = jnp.sum((x[:, None, :] - mu[None]) ** 2, axis=-1)
        resp = jax.nn.softmax(jnp.log(w) - 0.5 * d2 / var - 0.5 * x.shape[-1] * jnp.log(var), 1)
        post_mean = mu[None] + (s**2 / var)[None, :, None] * (x[:, None, :] - mu[None])
        return jnp.sum(resp[..., None] * post_mean, axis=1)

    return denoise


def run_chain(denoise, n, dim, cfg=PAPER, seed=0, **kw):
    fn = jax.jit(lambda k: sampler.heun_sample(denoise, k, (n, dim), sampler.schedule(cfg), **kw))
    return fn(jax.random.PRNGKey(seed))


# --------------------------------------------------------------------------------- EDM pieces


def test_preconditioning_identities():
    sigma = jnp.geomspace(0.002, 80.0, 50)
    for sd in (0.5, 1.0):
        c_skip, c_out, c_in, c_noise = edm.preconditioning(sigma, sd)
        # The network input has unit variance, and the effective training target too
        # (lambda c_out^2 = 1, EDM section 5); skip and out weights share a unit budget.
        np.testing.assert_allclose(c_in**2 * (sigma**2 + sd**2), 1.0, rtol=1e-5)
        np.testing.assert_allclose(edm.loss_weight(sigma, sd) * c_out**2, 1.0, rtol=1e-5)
        np.testing.assert_allclose(c_skip + c_out**2 / sd**2, 1.0, rtol=1e-5)
        np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-5)
    c_skip, c_out, *_ = edm.preconditioning(jnp.float32(1e-8), 1.0)
    assert abs(c_skip - 1.0) < 1e-6 and abs(c_out) < 1e-6


def test_schedule_end_points_and_churn():
    sigmas = np.asarray(edm.noise_levels(PAPER))
    assert sigmas.shape == (129,)
    np.testing.assert_allclose([sigmas[0], sigmas[127], sigmas[128]], [80.0, 0.002, 0.0], rtol=1e-5)
    assert np.all(np.diff(sigmas) < 0)
    gammas = np.asarray(edm.churn(jnp.asarray(sigmas), PAPER))
    inside = (sigmas[:-1] >= 0.05) & (sigmas[:-1] <= 50.0)
    np.testing.assert_allclose(gammas[inside], min(80 / 128, 2**0.5 - 1), rtol=1e-6)
    assert np.all(gammas[~inside] == 0) and inside.any() and (~inside).any()


def test_denoiser_tends_to_identity_at_small_sigma():
    state = model.init(jax.random.PRNGKey(0), 5, TINY)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5)) * 3
    denoise = model.denoiser(state)
    err = [float(jnp.abs(denoise(x, s) - x).max()) for s in (1e-1, 1e-3, 1e-5)]
    assert err[0] > err[1] > err[2] and err[2] < 1e-4


def test_loss_of_exact_denoiser_is_below_a_wrong_one():
    # For data N(0, s^2 I) the exact denoiser is s^2/(s^2+sigma^2) x; the identity map is worse.
    x0 = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (4096, 3))
    key = jax.random.PRNGKey(1)
    exact = lambda x_in, c: _f_from_d(x_in, c, lambda x, s: 0.25 / (0.25 + s**2) * x)  # noqa: E731
    zero_f = lambda x_in, c: jnp.zeros_like(x_in)  # noqa: E731  (D = c_skip x)
    assert float(edm.loss(exact, x0, key, PAPER)) < 0.5 * float(edm.loss(zero_f, x0, key, PAPER))


def _f_from_d(x_in, c_noise, d_fn):
    # Invert the preconditioning: F = (D(x) - c_skip x) / c_out, with sigma = exp(4 c_noise).
    sigma = jnp.exp(4 * c_noise)[:, None]
    c_skip, c_out, c_in, _ = edm.preconditioning(sigma, 1.0)
    x = x_in / c_in
    return (d_fn(x, sigma) - c_skip * x) / c_out


# ------------------------------------------------------------------------------------ sampler


def test_sampler_fits_1d_mixture():
    x, saved = run_chain(
        gmm_denoiser([0.3, 0.7], [[-2.0], [2.0]], [0.5, 0.5]), 4000, 1, save_at=(40, 127)
    )
    x = np.asarray(x[:, 0])
    # Target mean 0.8, variance 3.61, 30% of the mass below 0. Tolerances are ~4 standard errors
    # at n = 4000 (0.03, 0.1, 0.0072); seeds 0-2 measured within 2 (max errors 0.055, 0.12,
    # 0.014), the 128-step discretisation adds no visible bias.
    assert abs(x.mean() - 0.8) < 0.12
    assert abs(x.var() - 3.61) < 0.35
    assert abs((x < 0).mean() - 0.3) < 0.03
    # Intermediates: x_i is distributed as the data convolved with N(0, sigma_i^2).
    sigmas = edm.noise_levels(PAPER)
    expected = np.sqrt(3.61 + float(sigmas[40]) ** 2)
    assert abs(float(saved[0].std()) / expected - 1) < 0.05  # std error of a std: ~1.1%
    assert abs(float(saved[1].std()) - 1.9) < 0.1


def test_sampler_fits_2d_mixture():
    means = np.array([[0.0, 0.0], [3.0, 3.0], [-3.0, 3.0]])
    weights = np.array([0.5, 0.25, 0.25])
    x, _ = run_chain(gmm_denoiser(weights, means, [0.4, 0.4, 0.4]), 4000, 2, seed=1)
    x = np.asarray(x)
    mode = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    frac = np.bincount(mode, minlength=3) / len(x)
    # Binomial standard errors at n = 4000 are <= 0.008; tolerance ~4 of them.
    np.testing.assert_allclose(frac, weights, atol=0.03)
    for c in range(3):  # each mode's mean (std error 0.4/sqrt(1000) ~ 0.013) and spread
        np.testing.assert_allclose(x[mode == c].mean(0), means[c], atol=0.06)
        np.testing.assert_allclose(x[mode == c].std(0), 0.4, atol=0.05)


def test_inpainting_keeps_conditioned_dims_and_conditions_the_rest():
    denoise = gmm_denoiser([0.5, 0.5], [[-2.0, -2.0], [2.0, 2.0]], [0.5, 0.5])
    values = jnp.concatenate([jnp.full((1000, 1), 2.0), jnp.full((1000, 1), -2.0)])
    values = jnp.concatenate([values, jnp.zeros_like(values)], axis=1)
    cond = sampler.Condition(values, jnp.array([1.0, 0.0]))
    x, saved = run_chain(denoise, 2000, 2, condition=cond, save_at=(10, 100))
    assert jnp.all(x[:, 0] == values[:, 0]) and jnp.all(saved[:, :, 0] == values[None, :, 0])
    # x1 | x0 = +-2 is (almost exactly) the matching component: N(+-2, 0.5^2).
    np.testing.assert_allclose(x[:1000, 1].mean(), 2.0, atol=0.1)
    np.testing.assert_allclose(x[1000:, 1].mean(), -2.0, atol=0.1)


def test_batched_sampling_matches_pure_and_pads():
    state = model.init(jax.random.PRNGKey(0), 3, _with(TINY, sample_batch=64))
    values = jax.random.normal(jax.random.PRNGKey(2), (150, 3))
    cond = sampler.Condition(values, jnp.array([1.0, 0.0, 0.0]))
    key = jax.random.PRNGKey(1)
    x, saved = sampler.sample(state, key, 150, condition=cond, save_at=(3, 9))
    x_pure, saved_pure = jax.jit(
        lambda s, k, c: sampler.sample_pure(s, k, 150, condition=c, save_at=(3, 9))
    )(state, key, cond)
    assert x.shape == (150, 3) and saved.shape == (2, 150, 3)
    np.testing.assert_allclose(x, x_pure, atol=1e-5)
    np.testing.assert_allclose(saved, saved_pure, atol=1e-5)
    assert jnp.all(x[:, 0] == values[:, 0])
    assert sampler.batch_layout(150, 64) == (50, 3)
    with pytest.raises(ValueError, match="save_at"):
        sampler.sample(state, key, 10, save_at=(16,))


# ----------------------------------------------------------------------------------- training


def test_training_is_chunk_invariant_and_ema_warms_up():
    state = model.init(jax.random.PRNGKey(0), 2, _with(TINY, train_chunk=101))
    data = jax.random.normal(jax.random.PRNGKey(1), (256, 2))
    key = jax.random.PRNGKey(2)
    one, _ = model.train(state, data, key, 101, progress=False)
    # ema_pytorch's warm-up: the EMA copies the params at every 10th step up to step 100.
    assert all(jnp.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(one.params), jax.tree.leaves(one.ema_params), strict=True))  # fmt: skip
    chunked = state.replace(config=_with(TINY, train_chunk=40))
    many, losses = model.train(chunked, data, key, 101, progress=False)
    assert len(losses) == 3 and int(many.step) == 101
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(many.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_short_training_moves_samples_towards_the_data():
    cfg = _with(TINY, width=64, train_steps=400, train_chunk=400)
    modes = jnp.array([[-2.0, -2.0], [2.0, 2.0]])
    key_mode, key_noise = jax.random.split(jax.random.PRNGKey(0))
    data = modes[jax.random.bernoulli(key_mode, 0.5, (2048,)).astype(int)]
    data = data + 0.3 * jax.random.normal(key_noise, data.shape)
    state = model.init(jax.random.PRNGKey(1), 2, cfg)

    def distance_to_modes(state):
        x, _ = sampler.sample(state, jax.random.PRNGKey(3), 512)
        return float(jnp.min(jnp.linalg.norm(x[:, None] - modes[None], axis=-1), axis=1).mean())

    before = distance_to_modes(state)
    state, losses = model.train(state, data, jax.random.PRNGKey(2), 400, progress=False)
    after = distance_to_modes(state)
    # Measured: ~2.4 untrained, ~0.4 after 400 steps (the data's own value is 0.38).
    assert after < 0.5 * before and after < 1.0
