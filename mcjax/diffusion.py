"""DDPM/DDIM maths for a latent diffusion model with epsilon prediction, independent of the network.

Conventions:
- The network is a pure callable ``denoise(x_t, t_B, conditions) -> eps_hat`` with eps_hat shaped like x_t
  ([B, H, W, C] latents); ``conditions`` is any pytree with leading batch axis B, only passed through here.
- Timesteps are 0-based: t = 0..T-1 indexes ``NoiseSchedule`` arrays, so paper step t + 1 is index t and
  abar_t = prod_{s <= t} (1 - beta_s). x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DDPM eq. 4).
- Classifier-free guidance (Ho & Salimans 2022) happens only at sampling, in ``guided_epsilon``: the caller passes
  ``conditions`` and the same conditions with every entry masked (``unconditional``); training sees masked conditions
  through the caller's masking, not through this module.
- Randomness is keyed by position: ``key`` gives x_T (``initial_noise``) and, folded with the timestep, each step's
  noise, so the same key gives the same sample and DDPM matches DDIM(eta=1, every step) draw for draw.
- Latents are never clipped (x0 predictions of latents have no known range).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcjax.errors import InputError

SCHEDULE_KINDS = ("linear", "cosine")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
COSINE_OFFSET = 0.008  # s in Nichol & Dhariwal 2021, eq. 17
MAX_BETA = 0.999  # Nichol & Dhariwal clip betas so the last steps do not divide by ~0

Denoiser = Callable[[jax.Array, jax.Array, object], jax.Array]


class NoiseSchedule(NamedTuple):
    """The forward process as [T] float32 arrays (a pytree, so it can be a jit argument)."""

    betas: jax.Array
    alphas: jax.Array  # 1 - beta_t
    alphas_cumprod: jax.Array  # abar_t
    alphas_cumprod_prev: jax.Array  # abar_{t-1}, with abar_{-1} = 1
    posterior_variance: jax.Array  # beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t), DDPM eq. 7; 0 at t = 0

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]


def _linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise InputError(f"Linear noise schedule needs 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}.")
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def _cosine_alphas_cumprod(t: np.ndarray, num_timesteps: int) -> np.ndarray:
    """abar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2) (Nichol & Dhariwal eq. 17), paper time t."""
    def f(u):
        return np.cos((u / num_timesteps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    return f(np.asarray(t, np.float64)) / f(0.0)


def _cosine_betas(num_timesteps: int) -> np.ndarray:
    paper_t = np.arange(num_timesteps + 1)
    abar = _cosine_alphas_cumprod(paper_t, num_timesteps)
    return np.minimum(1.0 - abar[1:] / abar[:-1], MAX_BETA)


def make_noise_schedule(
    kind: str, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> NoiseSchedule:
    """The schedule ``kind`` (one of SCHEDULE_KINDS) with T = ``num_timesteps`` steps.

    ``linear``: betas evenly spaced from beta_start to beta_end (DDPM: 1e-4 ... 0.02, T = 1000).
    ``cosine``: Nichol & Dhariwal 2021 with s = 0.008, betas clipped at 0.999; beta_start/beta_end are ignored.
    Computed in float64 and stored as float32, so abar_t carries no accumulated rounding from the product.
    """
    if kind not in SCHEDULE_KINDS:
        raise InputError(f"Unknown noise schedule kind {kind!r}; choose from {SCHEDULE_KINDS}.")
    if int(num_timesteps) != num_timesteps or num_timesteps < 1:
        raise InputError(f"Noise schedule: num_timesteps must be a positive integer, got {num_timesteps}.")
    betas = _linear_betas(num_timesteps, beta_start, beta_end) if kind == "linear" else _cosine_betas(num_timesteps)
    alphas_cumprod = np.cumprod(1.0 - betas)
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    arrays = (betas, 1.0 - betas, alphas_cumprod, alphas_cumprod_prev, posterior_variance)
    return NoiseSchedule(*(jnp.asarray(a, jnp.float32) for a in arrays))


def _per_example(values_B: jax.Array, like: jax.Array) -> jax.Array:
    """[B] -> [B, 1, ..., 1], broadcastable against ``like``."""
    return values_B.reshape(values_B.shape + (1,) * (like.ndim - 1))


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t_B: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise: a draw of q(x_t | x0) for each example's own t."""
    abar = _per_example(schedule.alphas_cumprod[t_B], x0)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def noised_batch(schedule: NoiseSchedule, x0: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A training input: (x_t, t_B, noise) with t ~ U{0, ..., T-1} per example and the noise, both from ``key``."""
    t_key, noise_key = jax.random.split(key)
    t_B = jax.random.randint(t_key, (x0.shape[0],), 0, schedule.num_timesteps, dtype=jnp.int32)
    noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
    return q_sample(schedule, x0, t_B, noise), t_B, noise


def timestep_loss_weights(schedule: NoiseSchedule, loss_weighting: str = "uniform", min_snr_gamma: float = 5.0):
    """The ε-MSE's weight at each timestep, [T] float32; None for ``uniform`` (DDPM's L_simple, the paper's loss).

    ``min_snr`` (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"): for ε-prediction
    w_t = min(SNR_t, γ) / SNR_t with SNR_t = abar_t / (1 - abar_t). It lowers the weight of the nearly noise-free
    steps, whose gradients pull against the rest; the same optimum per timestep, reached in fewer steps.
    """
    if loss_weighting not in LOSS_WEIGHTINGS:
        raise InputError(f"Unknown loss weighting {loss_weighting!r}; choose from {LOSS_WEIGHTINGS}.")
    if loss_weighting == "uniform":
        return None
    if not min_snr_gamma > 0:
        raise InputError(f"min_snr_gamma must be > 0, got {min_snr_gamma}.")
    snr = schedule.alphas_cumprod / (1.0 - schedule.alphas_cumprod)
    return jnp.minimum(1.0, float(min_snr_gamma) / snr)  # = min(SNR, γ) / SNR, and 1 where abar_t underflows to 0


def epsilon_mse(eps_hat: jax.Array, noise: jax.Array, t_B: jax.Array, weights_T: jax.Array | None = None):
    """Mean squared error of the noise prediction, each example weighted by ``weights_T[t]`` (None: unweighted)."""
    squared = jnp.square(eps_hat.astype(jnp.float32) - noise)
    if weights_T is None:
        return jnp.mean(squared)
    return jnp.mean(_per_example(weights_T[t_B], squared) * squared)


def epsilon_loss(schedule: NoiseSchedule, denoise: Denoiser, x0: jax.Array, conditions, key: jax.Array,
                 weights_T: jax.Array | None = None) -> jax.Array:
    """DDPM's L_simple (eq. 14), optionally weighted per timestep (``timestep_loss_weights``), a scalar.

    Differentiate through ``denoise`` (e.g. ``functools.partial(apply, params)`` inside the loss) to train; a network
    with mutable state (batch norm) uses ``noised_batch`` and ``epsilon_mse`` directly.
    """
    x_t, t_B, noise = noised_batch(schedule, x0, key)
    return epsilon_mse(denoise(x_t, t_B, conditions), noise, t_B, weights_T)


def guided_epsilon(denoise: Denoiser, x_t: jax.Array, t_B: jax.Array, conditions, unconditional, scale) -> jax.Array:
    """Classifier-free guidance: eps = eps_uncond + scale * (eps_cond - eps_uncond).

    ``unconditional`` is ``conditions`` with every condition masked (same batch size). scale = 0 is unconditional,
    scale = 1 the plain conditional prediction, > 1 pushes towards the conditions. When ``scale`` is the Python
    number 1 the unconditional pass is skipped (``unconditional`` may then be None); otherwise both halves go through
    ONE denoiser call on a 2B batch, which is faster than two calls on accelerators.
    """
    if isinstance(scale, (int, float)) and scale == 1:
        return denoise(x_t, t_B, conditions)
    both = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), conditions, unconditional)
    eps = denoise(jnp.concatenate([x_t, x_t], axis=0), jnp.concatenate([t_B, t_B], axis=0), both)
    eps_cond, eps_uncond = jnp.split(eps, 2, axis=0)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def _sampling_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x_T key, per-step noise key): separate streams so x_T never correlates with a step's noise."""
    prior_key, noise_key = jax.random.split(key)
    return prior_key, noise_key


def initial_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """x_T ~ N(0, I), the starting point of both samplers for this ``key``."""
    return jax.random.normal(_sampling_keys(key)[0], shape)


def _step_noise(noise_key: jax.Array, t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(noise_key, t), shape)


def ddpm_sample(
    schedule: NoiseSchedule, denoise: Denoiser, shape: tuple[int, ...], conditions, unconditional, key: jax.Array,
    guidance_scale: float = 1.0,
) -> jax.Array:
    """Ancestral sampling (DDPM Algorithm 2) over all T steps; returns x_0 with shape ``shape`` = [B, ...].

    x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sqrt(beta_tilde_t) z, with the posterior
    variance beta_tilde_t (not beta_t): it is 0 at t = 0, so the last step adds no noise, and it makes this sampler
    DDIM with eta = 1 on every step. One ``lax.scan``; jit with ``denoise``, ``shape`` and ``guidance_scale`` static.
    """
    _, noise_key = _sampling_keys(key)
    batch = shape[0]

    def step(x_t, t):
        t_B = jnp.full((batch,), t, jnp.int32)
        eps = guided_epsilon(denoise, x_t, t_B, conditions, unconditional, guidance_scale)
        beta_t, alpha_t, abar_t = schedule.betas[t], schedule.alphas[t], schedule.alphas_cumprod[t]
        mean = (x_t - beta_t / jnp.sqrt(1.0 - abar_t) * eps) / jnp.sqrt(alpha_t)
        return mean + jnp.sqrt(schedule.posterior_variance[t]) * _step_noise(noise_key, t, shape), None

    timesteps = jnp.arange(schedule.num_timesteps - 1, -1, -1, dtype=jnp.int32)
    x0, _ = jax.lax.scan(step, initial_noise(key, shape), timesteps)
    return x0


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """``num_steps`` evenly spaced timesteps from T-1 downwards (the "trailing" spacing of Lin et al. 2024, Table 2).

    Starting at T-1 keeps x_T ~ N(0, I) consistent with the first step for any count (DDIM's own 0, c, 2c, ... never
    visits T-1); num_steps = T gives every timestep.
    """
    if int(num_steps) != num_steps or not 1 <= num_steps <= num_timesteps:
        raise InputError(f"DDIM: num_steps must be an integer in [1, {num_timesteps}], got {num_steps}.")
    return (num_timesteps - 1 - np.arange(num_steps) * num_timesteps // num_steps).astype(np.int32)


def ddim_sample(
    schedule: NoiseSchedule, denoise: Denoiser, shape: tuple[int, ...], conditions, unconditional, key: jax.Array,
    num_steps: int = 50, eta: float = 0.0, guidance_scale: float = 1.0,
) -> jax.Array:
    """DDIM (Song et al. 2021, eq. 12) on ``ddim_timesteps``; returns x_0 with shape ``shape`` = [B, ...].

    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z, with
    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) and
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev) (eq. 16).
    eta = 0 is deterministic given x_T; eta = 1 is DDPM-like. The last step goes to abar_prev = 1, i.e. returns
    x0_hat. One ``lax.scan``; jit with ``denoise``, ``shape``, ``num_steps``, ``eta``, ``guidance_scale`` static.
    """
    if not 0.0 <= eta <= 1.0:
        raise InputError(f"DDIM: eta must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like), got {eta}.")
    timesteps = ddim_timesteps(schedule.num_timesteps, num_steps)
    abar = schedule.alphas_cumprod[timesteps]
    abar_prev = jnp.concatenate([abar[1:], jnp.ones((1,), abar.dtype)])
    _, noise_key = _sampling_keys(key)
    batch = shape[0]

    def step(x_t, step_inputs):
        t, abar_t, abar_prev_t = step_inputs
        t_B = jnp.full((batch,), t, jnp.int32)
        eps = guided_epsilon(denoise, x_t, t_B, conditions, unconditional, guidance_scale)
        x0_hat = (x_t - jnp.sqrt(1.0 - abar_t) * eps) / jnp.sqrt(abar_t)
        sigma = eta * jnp.sqrt((1.0 - abar_prev_t) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev_t))
        direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev_t - sigma**2, 0.0)) * eps  # max: rounding only
        x_prev = jnp.sqrt(abar_prev_t) * x0_hat + direction + sigma * _step_noise(noise_key, t, shape)
        return x_prev, None

    x0, _ = jax.lax.scan(step, initial_noise(key, shape), (jnp.asarray(timesteps), abar, abar_prev))
    return x0
