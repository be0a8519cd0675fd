"""Multi-host start-up: ``jax.distributed.initialize`` from arguments, the environment or a cluster launcher.

Data-parallel training (``mcjax.train.ldm``) needs nothing else: after initialisation ``jax.devices()`` lists the
devices of every process, the mesh spans them and XLA's collectives cross process boundaries (gloo on CPUs).
"""

from __future__ import annotations

import os

import jax

ENVIRONMENT = {"coordinator_address": "MCJAX_COORDINATOR_ADDRESS", "num_processes": "MCJAX_NUM_PROCESSES",
               "process_id": "MCJAX_PROCESS_ID"}


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
    """Joins a multi-process job; returns whether one was joined.

    Arguments not given are read from MCJAX_COORDINATOR_ADDRESS / MCJAX_NUM_PROCESSES / MCJAX_PROCESS_ID. With none
    of them set, ``auto=True`` lets JAX detect a cluster launcher (SLURM, Open MPI, Kubernetes, TPU pods); otherwise
    this is a single-process run and nothing happens. Must run before anything touches a JAX device.
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    for name, variable in ENVIRONMENT.items():
        if given[name] is None and os.environ.get(variable):
            given[name] = os.environ[variable]
    if all(v is None for v in given.values()) and not auto:
        return False
    if any(v is None for v in given.values()) and not all(v is None for v in given.values()):
        missing = [ENVIRONMENT[k] for k, v in given.items() if v is None]
        raise ValueError(f"A multi-process run needs the coordinator address, the number of processes and this "
                         f"process's id; missing: {missing}.")
    if not jax.config.jax_platforms or "cpu" in jax.config.jax_platforms:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of several processes
    jax.distributed.initialize(
        coordinator_address=given["coordinator_address"],
        num_processes=None if given["num_processes"] is None else int(given["num_processes"]),
        process_id=None if given["process_id"] is None else int(given["process_id"]))
    return True
