"""Training a KL autoencoder: reconstruction + kl_weight * KL(posterior || N(0, I)).

This is the first stage of a latent diffusion model (Rombach et al. 2022, sec. 3.1) without the
perceptual and adversarial terms, which suits small datasets of simple images.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mcjax.models.autoencoder_kl import AutoencoderKL, kl_to_standard_normal

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
        raise ValueError(f"reconstruction={reconstruction!r}; expected one of {RECONSTRUCTION_LOSSES}")
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
    steps_per_chunk: int = 500,
    on_chunk=None,
):
    """Adam training on images in [-1, 1] held on device; returns (variables, metrics history of [steps] arrays).

    Each compiled chunk scans ``steps_per_chunk`` steps (1: a host loop of single steps, the fast program on CPUs);
    step t draws its batch indices and posterior noise from ``fold_in(key, t)``, so results do not depend on the
    chunking. Metrics come back to the host every ``max(steps_per_chunk, 50)`` steps, where ``on_chunk(steps_done,
    metrics)`` (optional: progress) is called. Raises on a NaN loss.
    """
    optimizer = optax.adam(learning_rate)
    train_step = make_train_step(module, optimizer, kl_weight, reconstruction)
    images = jnp.asarray(images_NxHxWxC, jnp.float32)

    @functools.partial(jax.jit, static_argnums=5, donate_argnums=(0, 1))
    def run_chunk(params, opt_state, images, key, first_step, num_steps: int):
        def body(carry, step):
            batch_key, noise_key = jax.random.split(jax.random.fold_in(key, step))
            batch = images[jax.random.randint(batch_key, (batch_size,), 0, images.shape[0])]
            params, opt_state, metrics = train_step(*carry, batch, noise_key)
            return (params, opt_state), metrics

        if num_steps == 1:  # no loop: XLA:CPU runs convolutions inside loops several times slower
            carry, metrics = body((params, opt_state), first_step)
            return carry, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(body, (params, opt_state), first_step + jnp.arange(num_steps))

    if steps < 1:
        raise ValueError(f"steps={steps}; expected at least 1")
    params = jax.tree.map(jnp.copy, variables["params"])  # donated below; the caller keeps its variables
    opt_state = optimizer.init(params)
    history, pending, synced = [], [], 0
    for first_step in range(0, steps, steps_per_chunk):
        num_steps = min(steps_per_chunk, steps - first_step)
        (params, opt_state), metrics = run_chunk(params, opt_state, images, key, first_step, num_steps)
        pending.append(metrics)  # fetched in groups, so small chunks do not wait for the host after every step
        done = first_step + num_steps
        if done - synced >= 50 or done == steps:
            fetched = jax.device_get(pending)
            metrics = {name: np.concatenate([m[name] for m in fetched]) for name in fetched[0]}
            bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
            if bad.size:
                raise FloatingPointError(f"autoencoder loss is {metrics['loss'][bad[0]]} at step {synced + bad[0]}")
            history.append(metrics)
            pending, synced = [], done
            if on_chunk is not None:
                on_chunk(done, metrics)
    history = {name: np.concatenate([m[name] for m in history]) for name in history[0]}
    return {**variables, "params": params}, history
