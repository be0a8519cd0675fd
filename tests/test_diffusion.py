"""DDPM/DDIM maths: schedules against the papers' formulas, samplers against a plain-loop reference and an exact
denoiser for Gaussian data, classifier-free guidance, the training loss, and input validation."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcjax import diffusion

SHORT = diffusion.make_noise_schedule("linear", num_timesteps=20, beta_start=1e-3, beta_end=0.2)
BATCH = 3


def rbg_key(seed):
    """Threefry keys cost XLA:CPU seconds to compile in every sampler; "rbg" keys compile fast."""
    return jax.random.key(seed, impl="rbg")


def _column(values_B):
    return values_B[:, None, None, None]


def toy_denoise(x_t, t_B, conditions):
    """A nonlinear stand-in for a network whose output depends on x_t, t and every condition leaf."""
    gain = 1.0 + 0.1 * jnp.sum(conditions["cat"], axis=1) + jnp.sum(conditions["num"], axis=1)
    return jnp.tanh(0.5 * x_t * _column(gain)) + 0.01 * _column(t_B.astype(x_t.dtype))


def toy_conditions():
    """Observed conditions and the same batch with every condition masked (index 0 / value 0)."""
    conditions = {"cat": jnp.array([[1, 2], [3, 1], [2, 2]]), "num": jnp.array([[0.5, -0.2], [0.1, 0.3], [0.9, 0.0]])}
    return conditions, jax.tree.map(jnp.zeros_like, conditions)


def recording(denoise):
    """``denoise`` that also appends the batch size of every call (at trace time under jit) to ``calls``."""
    calls = []

    def wrapped(x_t, t_B, conditions):
        calls.append(x_t.shape[0])
        return denoise(x_t, t_B, conditions)

    return wrapped, calls


def test_linear_schedule_matches_ddpm():
    schedule = diffusion.make_noise_schedule("linear")
    assert schedule.num_timesteps == 1000
    np.testing.assert_allclose([schedule.betas[0], schedule.betas[-1]], [1e-4, 0.02], rtol=1e-6)
    np.testing.assert_allclose(schedule.alphas, 1.0 - schedule.betas, rtol=1e-6)
    assert np.all(np.diff(schedule.alphas_cumprod) < 0) and 0 < schedule.alphas_cumprod[-1] < schedule.alphas_cumprod[0]
    assert schedule.alphas_cumprod[-1] == pytest.approx(4.04e-5, rel=0.01)  # DDPM's abar_T: x_T is almost pure noise
    assert schedule.alphas_cumprod_prev[0] == 1.0 and schedule.posterior_variance[0] == 0.0
    np.testing.assert_allclose(schedule.alphas_cumprod_prev[1:], schedule.alphas_cumprod[:-1])


def test_cosine_schedule_matches_closed_form():
    T, s = 1000, 0.008
    schedule = diffusion.make_noise_schedule("cosine", num_timesteps=T)

    def f(t):  # Nichol & Dhariwal eq. 17; index i is paper time i + 1
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    expected = np.array([f(i + 1) / f(0) for i in range(T - 1)])
    np.testing.assert_allclose(schedule.alphas_cumprod[:-1], expected, rtol=1e-4, atol=1e-7)
    assert float(jnp.max(schedule.betas)) == pytest.approx(0.999)  # the clipped last step
    assert np.all(np.diff(schedule.alphas_cumprod) < 0)


def test_q_sample_marginal_moments():
    schedule = diffusion.make_noise_schedule("linear")
    t_B = jnp.array([0, 100, 500, 999])
    x0 = jnp.full((4, 32, 32, 4), 2.0)
    x_t = diffusion.q_sample(schedule, x0, t_B, jax.random.normal(rbg_key(0), x0.shape))
    abar = np.asarray(schedule.alphas_cumprod[t_B])
    np.testing.assert_allclose(jnp.mean(x_t, axis=(1, 2, 3)), 2.0 * np.sqrt(abar), atol=0.05)
    np.testing.assert_allclose(jnp.std(x_t, axis=(1, 2, 3)), np.sqrt(1.0 - abar), rtol=0.05)


def test_guidance_formula_and_batching():
    conditions, unconditional = toy_conditions()
    x_t = jax.random.normal(rbg_key(1), (BATCH, 4, 4, 2))
    t_B = jnp.array([0, 5, 19])
    cond, uncond = toy_denoise(x_t, t_B, conditions), toy_denoise(x_t, t_B, unconditional)
    denoise, calls = recording(toy_denoise)

    def guided(scale):
        calls.clear()
        return diffusion.guided_epsilon(denoise, x_t, t_B, conditions, unconditional, scale)

    np.testing.assert_array_equal(guided(1.0), cond)
    assert calls == [BATCH], "scale 1 must not evaluate the unconditional batch"
    np.testing.assert_allclose(guided(0.0), uncond, atol=1e-6)
    assert calls == [2 * BATCH], "cond and uncond must share one denoiser call"
    np.testing.assert_allclose(guided(3.0), uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert calls == [2 * BATCH]
    # A traced scale cannot be compared with 1 at trace time: the batched call gives the same answer.
    np.testing.assert_allclose(jax.jit(guided)(jnp.float32(1.0)), cond, atol=1e-6)


def reference_ddim(schedule, denoise, x_T, conditions, unconditional, scale, num_steps):
    """Deterministic DDIM (eta = 0) as a plain float64 loop with two separate denoiser calls per step."""
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    timesteps = diffusion.ddim_timesteps(schedule.num_timesteps, num_steps)
    x = np.asarray(x_T, np.float64)
    for i, t in enumerate(timesteps):
        abar_prev = abar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
        t_B = jnp.full((x.shape[0],), t, jnp.int32)
        x_in = jnp.asarray(x, jnp.float32)
        cond = np.asarray(denoise(x_in, t_B, conditions), np.float64)
        uncond = np.asarray(denoise(x_in, t_B, unconditional), np.float64)
        eps = uncond + scale * (cond - uncond)
        x0_hat = (x - np.sqrt(1.0 - abar[t]) * eps) / np.sqrt(abar[t])
        x = np.sqrt(abar_prev) * x0_hat + np.sqrt(1.0 - abar_prev) * eps
    return x


@pytest.mark.parametrize("num_steps,scale", [(20, 1.0), (7, 2.0), (1, 0.0)])
def test_ddim_eta0_is_the_deterministic_update_from_x_T(num_steps, scale):
    """Equality with a noise-free reference from the same x_T shows that no per-step noise enters at eta = 0."""
    conditions, unconditional = toy_conditions()
    shape, key = (BATCH, 4, 4, 2), rbg_key(2)
    denoise, calls = recording(toy_denoise)
    sample = jax.jit(lambda k: diffusion.ddim_sample(
        SHORT, denoise, shape, conditions, unconditional, k, num_steps=num_steps, guidance_scale=scale))
    x0 = sample(key)
    assert len(calls) == 1, "the steps must be one scanned body, traced once"
    expected = reference_ddim(SHORT, toy_denoise, diffusion.initial_noise(key, shape), conditions, unconditional,
                              scale, num_steps)
    np.testing.assert_allclose(x0, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(sample(key), x0)


def test_stochastic_samplers_use_their_noise():
    conditions, _ = toy_conditions()
    shape, key = (BATCH, 4, 4, 2), rbg_key(3)
    ddim = functools.partial(diffusion.ddim_sample, SHORT, toy_denoise, shape, conditions, None, num_steps=20)

    @jax.jit
    def samples(key, other_key):
        return ddim(key), ddim(key, eta=1.0), ddim(other_key), diffusion.ddpm_sample(
            SHORT, toy_denoise, shape, conditions, None, key)

    deterministic, stochastic, other_x_T, ddpm = samples(key, rbg_key(4))
    assert not np.allclose(deterministic, stochastic)
    assert not np.allclose(deterministic, other_x_T)
    # DDPM with the posterior variance is DDIM with eta = 1 on every step, draw for draw.
    np.testing.assert_allclose(ddpm, stochastic, rtol=1e-4, atol=1e-4)


def gaussian_data_denoiser(schedule, mu, s):
    """E[eps | x_t] for x0 ~ N(mu, s^2) per pixel: the best any network can do for this data."""
    def denoise(x_t, t_B, conditions):
        abar = _column(schedule.alphas_cumprod[t_B])
        return jnp.sqrt(1.0 - abar) * (x_t - jnp.sqrt(abar) * mu) / (abar * s**2 + 1.0 - abar)

    return denoise


@pytest.mark.parametrize("kind", diffusion.SCHEDULE_KINDS)
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_exact_denoiser_recovers_the_data_distribution(kind, sampler):
    mu, s = 1.5, 0.5
    schedule = diffusion.make_noise_schedule(kind)
    denoise = gaussian_data_denoiser(schedule, mu, s)
    shape = (16, 32, 32, 1)  # 16384 iid pixels: sampling error of the std is about 0.6 %
    if sampler == "ddim":
        sample = functools.partial(diffusion.ddim_sample, num_steps=50, eta=0.0)
    else:
        sample = diffusion.ddpm_sample
    x0 = jax.jit(lambda k: sample(schedule, denoise, shape, None, None, k))(rbg_key(5))
    assert x0.shape == shape
    assert float(jnp.mean(x0)) == pytest.approx(mu, abs=0.03)
    # 50 DDIM steps on the linear schedule shrink the std by about 5 % (discretisation, not noise).
    assert float(jnp.std(x0)) == pytest.approx(s, rel=0.08)


def test_epsilon_loss():
    schedule = diffusion.make_noise_schedule("linear")
    x0 = jnp.full((8, 8, 8, 4), 0.7)
    key = rbg_key(6)

    def point_mass_denoiser(x_t, t_B, conditions):  # exact for x0 = 0.7 everywhere
        abar = _column(schedule.alphas_cumprod[t_B])
        return (x_t - jnp.sqrt(abar) * 0.7) / jnp.sqrt(1.0 - abar)

    def linear_denoiser(params, x_t, t_B, conditions):
        return params["w"] * x_t + params["b"] * _column(conditions)

    def loss_with(denoise, conditions=None):
        return diffusion.epsilon_loss(schedule, denoise, x0, conditions, key)

    @jax.jit
    def losses(params):
        linear = jax.value_and_grad(lambda p: loss_with(functools.partial(linear_denoiser, p), jnp.ones(8)))(params)
        return loss_with(point_mass_denoiser), loss_with(lambda x_t, t_B, c: jnp.zeros_like(x_t)), linear

    exact, zero, (linear, grads) = losses({"w": jnp.float32(0.5), "b": jnp.float32(0.1)})
    assert exact.shape == () and float(exact) < 1e-6
    assert float(zero) == pytest.approx(1.0, abs=0.1)  # E[noise^2] = 1
    assert np.isfinite(linear) and all(np.isfinite(g) and g != 0 for g in jax.tree.leaves(grads))


def test_min_snr_weights():
    schedule = diffusion.make_noise_schedule("linear")
    assert diffusion.timestep_loss_weights(schedule, "uniform") is None
    weights = np.asarray(diffusion.timestep_loss_weights(schedule, "min_snr", min_snr_gamma=5.0))
    abar = np.asarray(schedule.alphas_cumprod, np.float64)
    snr = abar / (1 - abar)
    np.testing.assert_allclose(weights, np.minimum(snr, 5.0) / snr, rtol=1e-3)
    assert weights.shape == (1000,) and np.all(np.diff(weights) >= 0)  # noisier steps weigh more, up to 1
    assert weights[0] < 1e-3 and weights[-1] == 1.0 and np.all(weights[snr <= 5.0] == 1.0)
    zero_snr = schedule._replace(alphas_cumprod=schedule.alphas_cumprod.at[-1].set(0.0))
    assert float(diffusion.timestep_loss_weights(zero_snr, "min_snr")[-1]) == 1.0  # not 0 / 0
    with pytest.raises(ValueError, match="Unknown loss weighting 'p2'"):
        diffusion.timestep_loss_weights(schedule, "p2")
    with pytest.raises(ValueError, match="min_snr_gamma must be > 0"):
        diffusion.timestep_loss_weights(schedule, "min_snr", min_snr_gamma=0.0)


def test_weighted_epsilon_mse_weighs_each_example_by_its_timestep():
    rng = np.random.default_rng(0)
    eps_hat, noise = (jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32) for _ in range(2))
    t_B = jnp.array([0, 2, 2])
    per_example = np.mean(np.square(np.asarray(eps_hat) - np.asarray(noise)), axis=(1, 2, 3))
    weights_T = jnp.array([0.5, 7.0, 2.0])
    expected = np.mean(per_example * np.array([0.5, 2.0, 2.0]))
    assert float(diffusion.epsilon_mse(eps_hat, noise, t_B, weights_T)) == pytest.approx(expected, rel=1e-6)
    assert float(diffusion.epsilon_mse(eps_hat, noise, t_B)) == pytest.approx(per_example.mean(), rel=1e-6)
    ones = diffusion.epsilon_mse(eps_hat, noise, t_B, jnp.ones(3))
    assert float(ones) == pytest.approx(float(diffusion.epsilon_mse(eps_hat, noise, t_B)), rel=1e-6)


def test_ddim_timesteps_are_evenly_spaced_from_the_last():
    assert list(diffusion.ddim_timesteps(1000, 50)[:3]) == [999, 979, 959]
    assert list(diffusion.ddim_timesteps(5, 5)) == [4, 3, 2, 1, 0]
    assert list(diffusion.ddim_timesteps(5, 1)) == [4]
    for n in (1, 3, 7, 999):
        steps = diffusion.ddim_timesteps(1000, n)
        assert len(steps) == n and steps[0] == 999 and np.all(np.diff(steps) < 0)


@pytest.mark.parametrize("call,message", [
    (lambda: diffusion.make_noise_schedule("quadratic"), "Unknown noise schedule kind"),
    (lambda: diffusion.make_noise_schedule("linear", num_timesteps=0), "num_timesteps"),
    (lambda: diffusion.make_noise_schedule("linear", beta_start=0.1, beta_end=0.01), "beta_start <= beta_end"),
    (lambda: diffusion.make_noise_schedule("linear", beta_end=1.0), "beta_end < 1"),
    (lambda: diffusion.ddim_sample(SHORT, toy_denoise, (1, 2, 2, 1), None, None, rbg_key(0), num_steps=0),
     "num_steps"),
    (lambda: diffusion.ddim_sample(SHORT, toy_denoise, (1, 2, 2, 1), None, None, rbg_key(0), num_steps=21),
     "num_steps"),
    (lambda: diffusion.ddim_sample(SHORT, toy_denoise, (1, 2, 2, 1), None, None, rbg_key(0), eta=-0.1), "eta"),
    (lambda: diffusion.ddim_sample(SHORT, toy_denoise, (1, 2, 2, 1), None, None, rbg_key(0), eta=1.5), "eta"),
])
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
