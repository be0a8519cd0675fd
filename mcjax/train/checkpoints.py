"""Orbax checkpoints of the whole training state (params, optimiser state, step), written atomically.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so an interrupted save never
leaves a half-written checkpoint behind; restoring takes an abstract target (``jax.eval_shape``) so shapes, dtypes and
the pytree structure are checked against the running program.
"""

from __future__ import annotations

import os

import jax


def manager(directory: str, max_to_keep: int = 2):
    """A CheckpointManager over ``directory`` (created if needed)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(checkpoints, step: int, state) -> None:
    """Saves ``state`` under ``step`` and waits, so the state can be donated to the next compiled chunk."""
    import orbax.checkpoint as ocp

    checkpoints.save(int(step), args=ocp.args.StandardSave(state), force=True)
    checkpoints.wait_until_finished()


def restore_latest(checkpoints, abstract_state):
    """The newest checkpoint restored into the structure of ``abstract_state``, or None when there is none."""
    import orbax.checkpoint as ocp

    step = checkpoints.latest_step()
    if step is None:
        return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    return checkpoints.restore(step, args=ocp.args.StandardRestore(target))
