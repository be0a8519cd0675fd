"""Process-wide settings, made by the entry points (``train.py``, ``sample.py``) and nowhere else.

Importing this module loads no JAX, so an entry point can restart itself with a faster allocator before JAX starts:

- **Allocator** (``restart_with_fast_malloc``). XLA:CPU allocates each execution's temporary buffer (the activations a
  training step keeps for its backward pass: ~1.3 GB per step of the paper's U-Net at batch 8) afresh, from a worker
  thread. glibc serves blocks that large with ``mmap`` and gives them back with ``munmap``, so every step faults the
  whole buffer in again, 4 KiB at a time (~320,000 page faults per step, ~15 % of the step on 2 cores). tcmalloc keeps
  freed spans and reuses them; glibc (≥ 2.35) with ``glibc.malloc.hugetlb=1`` at least maps them in 2 MiB pages. Both
  must be in place when the process starts (``LD_PRELOAD`` / ``GLIBC_TUNABLES``), so the entry point re-executes
  itself once with the variable set. ``MCJAX_MALLOC`` chooses: ``auto`` (default: tcmalloc when the system has it,
  e.g. Debian/Ubuntu's ``libtcmalloc-minimal4``, else glibc's huge pages), ``tcmalloc``, ``hugepages``, ``system``
  (leave it alone) or the path of an allocator library to preload. Nothing changes where an allocator is already
  preloaded or glibc's hugetlb tunable is already set (to any value).
- **Host devices, compilation cache, several hosts** (``configure_jax``): one XLA:CPU device per core (a sweep splits
  its runs over them), JAX's persistent compilation cache, and ``jax.distributed.initialize`` from arguments, the
  ``MCJAX_*`` environment or a cluster launcher.
- **One GPU for JAX and PyTorch** (``share_accelerator_with_torch``, ``release_device_memory``): JAX reserves 75 % of
  a GPU's memory when it starts; ``sample.py --refine`` makes it allocate only what it uses and give it back when freed,
  samples, frees every JAX buffer, and only then loads the PyTorch refiner.
- **Errors** (``exit_on_input_errors``): bad input prints one line, ``error: <message>``, and exits with status 2;
  ``MCJAX_TRACEBACK=1`` shows the traceback. Any other exception is an internal error and keeps its traceback.
"""

import ctypes.util
import functools
import os
import sys

CHOICES = ("auto", "tcmalloc", "hugepages", "system")
HUGEPAGES_TUNABLE = "glibc.malloc.hugetlb=1"
HUGEPAGES_MIN_GLIBC = (2, 35)
PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc (not musl, not macOS), else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    if name != "glibc":
        return None
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def find_tcmalloc() -> str | None:
    """The tcmalloc library's name as the dynamic loader finds it (LD_PRELOAD accepts it), or None."""
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def active_allocator(environ) -> str:
    """What the process started with: the preloaded allocator, ``glibc hugepages`` or ``system``."""
    preloaded = [name for name in PRELOADED_ALLOCATORS if name in environ.get("LD_PRELOAD", "")]
    if preloaded:
        return preloaded[0]
    return "glibc hugepages" if HUGEPAGES_TUNABLE in environ.get("GLIBC_TUNABLES", "") else "system"


def malloc_environment(environ, glibc: tuple[int, int] | None, tcmalloc: str | None) -> dict | None:
    """The environment to restart with (``environ`` plus the allocator's variable), or None to keep this one.

    ``glibc`` is ``glibc_version()`` and ``tcmalloc`` is ``find_tcmalloc()``, passed in so that this stays pure.
    """
    choice = environ.get("MCJAX_MALLOC", "auto") or "auto"
    preloads = environ.get("LD_PRELOAD", "")
    if os.sep in choice:
        if not os.path.isfile(choice):
            raise FileNotFoundError(f"MCJAX_MALLOC={choice!r}: no such allocator library.")
        if choice in preloads.split():  # already restarted with it
            return None
        tcmalloc, choice = choice, "tcmalloc"
    if choice not in CHOICES:
        raise ValueError(f"MCJAX_MALLOC={choice!r} is not one of {CHOICES} or a library path.")
    user_set = active_allocator(environ) != "system" or "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", "")
    if choice == "system" or glibc is None or user_set:
        return None
    if choice == "tcmalloc" and tcmalloc is None:
        raise RuntimeError("MCJAX_MALLOC=tcmalloc, but no tcmalloc library was found: install it (Debian/Ubuntu: "
                           "apt install libtcmalloc-minimal4) or choose MCJAX_MALLOC=auto.")
    if choice in ("auto", "tcmalloc") and tcmalloc is not None:
        return {**environ, "LD_PRELOAD": " ".join(filter(None, [tcmalloc, preloads]))}
    if glibc < HUGEPAGES_MIN_GLIBC:
        if choice == "hugepages":
            raise RuntimeError(f"MCJAX_MALLOC=hugepages needs glibc ≥ 2.35; this is glibc {glibc[0]}.{glibc[1]}.")
        return None
    tunables = ":".join(filter(None, [environ.get("GLIBC_TUNABLES", ""), HUGEPAGES_TUNABLE]))
    return {**environ, "GLIBC_TUNABLES": tunables}


def restart_with_fast_malloc() -> None:
    """Re-executes this Python process (same interpreter, same arguments) with a faster allocator, if there is one.

    Call it first thing in an entry point's ``__main__``; it returns at once when nothing is to change (Linux with
    glibc only; already set up; ``MCJAX_MALLOC=system``; a program from ``-c`` or stdin, which cannot be re-run).
    """
    if not sys.platform.startswith("linux") or sys.argv[0] in ("", "-", "-c"):
        return
    environment = malloc_environment(os.environ, glibc_version(), find_tcmalloc())
    if environment is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


DISTRIBUTED_ENVIRONMENT = {"coordinator_address": "MCJAX_COORDINATOR_ADDRESS",
                           "num_processes": "MCJAX_NUM_PROCESSES", "process_id": "MCJAX_PROCESS_ID"}


# XLA:CPU's own convolution and dot kernels instead of YNNPACK's: faster for the image models (mcjax's U-Net, training
# step 1.87 against 2.20 s, benchmarks/unet_throughput.py), slower for the mcVAE's small dense layers (its step 1.47 and
# 1.49 against 1.95 and 2.36 ms, processes alternated), so the entry points set it for image jobs only.
IMAGE_JOBS = ("ldm", "first_stage")
IMAGE_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot"


def xla_flag_is_set(name: str) -> bool:
    """Whether XLA_FLAGS sets ``--name`` (a setting that is the user's to keep)."""
    return name in os.environ.get("XLA_FLAGS", "")


def add_xla_flags(flags: str) -> None:
    """Adds each ``--name=value`` of ``flags`` to XLA_FLAGS, read when JAX initialises its backends; a flag the user
    set is kept."""
    for flag in flags.split():
        if not xla_flag_is_set(flag.split("=")[0]):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


def set_host_device_count(count: int) -> None:
    """XLA:CPU shows ``count`` devices (before JAX initialises its backends; a value the user set is kept)."""
    add_xla_flags(f"--xla_force_host_platform_device_count={count}")


def set_xla_flags_for_job(job: str) -> None:
    """``IMAGE_XLA_FLAGS`` for the image jobs (before JAX initialises its backends; no effect on accelerators)."""
    if job in IMAGE_JOBS:
        add_xla_flags(IMAGE_XLA_FLAGS)


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache, so a second run of the same program skips compilation ("" disables)."""
    if directory:
        import jax

        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def share_accelerator_with_torch(environ=os.environ) -> None:
    """JAX takes device memory as it needs it (no 75 % reservation) through the platform allocator, which returns
    freed buffers to the driver, so PyTorch can use them after JAX is done. Before JAX starts its backends; values
    the user set are kept (XLA_PYTHON_CLIENT_MEM_FRACTION=.3 instead bounds JAX's pool and keeps its faster one)."""
    if "XLA_PYTHON_CLIENT_MEM_FRACTION" not in environ:
        environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        environ.setdefault("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")


def release_device_memory() -> None:
    """Deletes every live JAX array and compiled program of this process, so their device memory is free for another
    framework (returned to the driver under ``share_accelerator_with_torch``)."""
    import gc

    import jax

    gc.collect()
    for array in jax.live_arrays():
        array.delete()
    jax.clear_caches()


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> bool:
    """Joins a multi-process job; returns whether one was joined.

    Arguments not given are read from MCJAX_COORDINATOR_ADDRESS / MCJAX_NUM_PROCESSES / MCJAX_PROCESS_ID. With none
    of them set, ``auto=True`` lets JAX detect a cluster launcher (SLURM, Open MPI, Kubernetes, TPU pods); otherwise
    this is a single-process run and nothing happens. Must run before anything touches a JAX device. Data-parallel
    training needs nothing else: ``jax.devices()`` then lists the devices of every process and XLA's collectives cross
    process boundaries (gloo on CPUs).
    """
    import jax

    from mcjax.errors import InputError

    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    for name, variable in DISTRIBUTED_ENVIRONMENT.items():
        if given[name] is None and os.environ.get(variable):
            given[name] = os.environ[variable]
    if all(v is None for v in given.values()) and not auto:
        return False
    if any(v is None for v in given.values()) and not all(v is None for v in given.values()):
        missing = [DISTRIBUTED_ENVIRONMENT[k] for k, v in given.items() if v is None]
        raise InputError(f"A multi-process run needs the coordinator address, the number of processes and this "
                         f"process's id; missing: {missing}.")
    if not jax.config.jax_platforms or "cpu" in jax.config.jax_platforms:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of several processes
    jax.distributed.initialize(
        coordinator_address=given["coordinator_address"],
        num_processes=None if given["num_processes"] is None else int(given["num_processes"]),
        process_id=None if given["process_id"] is None else int(given["process_id"]))
    return True


def exit_on_input_errors(main):
    """``main`` for ``absl.app.run``: an ``InputError`` or a missing file prints ``error: <message>`` and exits with
    status 2, a NaN loss (``FloatingPointError``) with status 1; ``MCJAX_TRACEBACK=1`` re-raises instead."""
    from mcjax.errors import InputError

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except (InputError, FileNotFoundError, FloatingPointError) as error:
            if os.environ.get("MCJAX_TRACEBACK", "") not in ("", "0"):
                raise
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(1 if isinstance(error, FloatingPointError) else 2)

    return wrapped
