"""Training a KL autoencoder: reconstruction + kl_weight * KL(posterior || N(0, I)).

This is the first stage of a latent diffusion model (Rombach et al. 2022, sec. 3.1) without the
perceptual and adversarial terms, which suits small datasets of simple images.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mcjax.errors import InputError
from mcjax.models.autoencoder_kl import AutoencoderKL
from mcjax.models.layers import kl_to_standard_normal
from mcjax.train import loop
from mcjax.train.metrics import ProgressBar

RECONSTRUCTION_LOSSES = ("l1", "l2")


def autoencoder_loss(
    module: AutoencoderKL, params, images_BxHxWxC, key, kl_weight: float = 1e-6, reconstruction: str = "l1"
):
    """(loss, aux): mean per-pixel reconstruction error + kl_weight * mean per-example KL.

    ``aux`` holds the per-example terms ``reconstruction`` [B] and ``kl`` [B]. The KL is summed over
    latent dimensions, so ``kl_weight`` is comparable to the LDM setting (1e-6) only for that scale.
    """
    x_hat, (mean, logvar) = module.apply({"params": params}, images_BxHxWxC, key)
    error = x_hat - images_BxHxWxC
    error = jnp.abs(error) if reconstruction == "l1" else jnp.square(error)
    per_example = {"reconstruction": jnp.mean(error, axis=(1, 2, 3)), "kl": kl_to_standard_normal(mean, logvar)}
    loss = jnp.mean(per_example["reconstruction"]) + kl_weight * jnp.mean(per_example["kl"])
    return loss, per_example


def make_train_step(
    module: AutoencoderKL, optimizer: optax.GradientTransformation, kl_weight: float = 1e-6, reconstruction: str = "l1"
):
    """A pure step (params, opt_state, images_BxHxWxC, key) -> (params, opt_state, metrics) for ``jax.jit``.

    Donate params and opt_state (``donate_argnums=(0, 1)``) to update them in place.
    """
    if reconstruction not in RECONSTRUCTION_LOSSES:
        raise InputError(f"reconstruction={reconstruction!r}; expected one of {RECONSTRUCTION_LOSSES}")
    loss_fn = functools.partial(autoencoder_loss, module, kl_weight=kl_weight, reconstruction=reconstruction)

    def train_step(params, opt_state, images_BxHxWxC, key):
        (loss, per_example), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images_BxHxWxC, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {
            "loss": loss,
            "reconstruction": jnp.mean(per_example["reconstruction"]),
            "kl": jnp.mean(per_example["kl"]),
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
        }
        return params, opt_state, metrics

    return train_step


def train_autoencoder(
    module: AutoencoderKL,
    variables,
    images_NxHxWxC,
    steps: int,
    batch_size: int,
    learning_rate: float,
    key,
    kl_weight: float = 1e-6,
    reconstruction: str = "l1",
    steps_per_chunk: int = 0,
    progress: ProgressBar | None = None,
):
    """Adam training on images in [-1, 1] held on device; returns (variables, metrics history of [steps] arrays).

    Chunks of ``steps_per_chunk`` steps (0: ``loop.steps_per_call``) run through the host loop; step t draws its batch
    indices and posterior noise from ``fold_in(key, t)``, so results do not depend on the chunking. Metrics come back
    every 50 steps or more; a NaN loss stops training with its step.
    """
    if steps < 1:
        raise InputError(f"steps={steps}; expected at least 1")
    optimizer = optax.adam(learning_rate)
    train_step = make_train_step(module, optimizer, kl_weight, reconstruction)
    images = jnp.asarray(images_NxHxWxC, jnp.float32)

    @functools.partial(jax.jit, static_argnums=4, donate_argnums=0)
    def run_chunk(carry, images, key, first_step, num_steps: int):
        def step(state):
            (params, opt_state), t = state
            batch_key, noise_key = jax.random.split(jax.random.fold_in(key, t))
            batch = images[jax.random.randint(batch_key, (batch_size,), 0, images.shape[0])]
            params, opt_state, metrics = train_step(params, opt_state, batch, noise_key)
            return ((params, opt_state), t + 1), metrics

        (carry, _), metrics = loop.scan_steps(step, (carry, first_step), num_steps)
        return carry, metrics

    params = jax.tree.map(jnp.copy, variables["params"])  # donated below; the caller keeps its variables
    history = []

    def log(first, end, metrics):
        history.append(metrics)
        return float(np.mean(metrics["loss"]))

    chunk_size = loop.steps_per_call(steps_per_chunk, 500)
    params, _ = loop.run((params, optimizer.init(params)), 0, steps,
                         lambda carry, first, num: run_chunk(carry, images, key, first, num), chunk_size=chunk_size,
                         log=log, log_every=max(chunk_size, 50), progress=progress, name="autoencoder")
    history = {name: np.concatenate([m[name] for m in history]) for name in history[0]}
    return {**variables, "params": params}, history
