"""Host memory allocation for XLA:CPU: tcmalloc, or glibc's huge-page tunable, set up when an entry point starts.

Why: XLA:CPU allocates each execution's temporary buffer (the activations a training step keeps for its backward
pass: ~1.3 GB per step of the paper's U-Net at batch 8) afresh, from a worker thread. glibc serves blocks that
large with ``mmap`` and gives them back with ``munmap``, so every step faults the whole buffer in again, 4 KiB at a
time (~320,000 page faults per step, ~15 % of the step on 2 cores). tcmalloc keeps freed spans and reuses them; glibc
(≥ 2.35) with ``glibc.malloc.hugetlb=1`` at least maps them in 2 MiB pages. Both must be in place when the process
starts (``LD_PRELOAD`` / ``GLIBC_TUNABLES``), hence ``restart_with_fast_malloc``: the entry point re-executes itself
once with the variable set.

``MCJAX_MALLOC`` chooses: ``auto`` (default: tcmalloc when the system has it, e.g. Debian/Ubuntu's
``libtcmalloc-minimal4``, else glibc's huge pages), ``tcmalloc``, ``hugepages``, ``system`` (leave it alone) or the
path of an allocator library to preload (e.g. one unpacked from a package without root rights). Nothing changes where
an allocator is already preloaded or glibc's hugetlb tunable is already set (to any value).
"""

import ctypes.util
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
