"""mcjax.host_malloc: which allocator an entry point restarts with, and that it restarts exactly once."""

import os
import subprocess
import sys

import pytest

from mcjax import host_malloc

GLIBC = (2, 36)
TCMALLOC = "libtcmalloc_minimal.so.4"


def test_auto_prefers_tcmalloc_and_keeps_other_preloads():
    env = host_malloc.malloc_environment({"LD_PRELOAD": "libfoo.so", "PATH": "/bin"}, GLIBC, TCMALLOC)
    assert env["LD_PRELOAD"] == f"{TCMALLOC} libfoo.so"
    assert env["PATH"] == "/bin"
    assert host_malloc.active_allocator(env) == "tcmalloc"


def test_auto_falls_back_to_glibc_hugepages_keeping_other_tunables():
    env = host_malloc.malloc_environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}, GLIBC, None)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"
    assert host_malloc.active_allocator(env) == "glibc hugepages"
    assert "LD_PRELOAD" not in env


@pytest.mark.parametrize("environ, glibc", [
    ({"MCJAX_MALLOC": "system"}, GLIBC),  # opted out
    ({}, None),  # not glibc (musl, macOS)
    ({}, (2, 31)),  # glibc without the hugetlb tunable, and no tcmalloc
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, GLIBC),  # the user's own allocator
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, GLIBC),  # already restarted
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC),  # the user's own choice
])
def test_nothing_changes(environ, glibc):
    assert host_malloc.malloc_environment(environ, glibc, None) is None


def test_explicit_choices():
    assert "LD_PRELOAD" not in host_malloc.malloc_environment({"MCJAX_MALLOC": "hugepages"}, GLIBC, TCMALLOC)
    with pytest.raises(RuntimeError, match="libtcmalloc-minimal4"):
        host_malloc.malloc_environment({"MCJAX_MALLOC": "tcmalloc"}, GLIBC, None)
    with pytest.raises(RuntimeError, match="glibc ≥ 2.35"):
        host_malloc.malloc_environment({"MCJAX_MALLOC": "hugepages"}, (2, 31), None)
    with pytest.raises(ValueError, match="MCJAX_MALLOC='jemalloc' is not one of"):
        host_malloc.malloc_environment({"MCJAX_MALLOC": "jemalloc"}, GLIBC, None)


def test_a_library_path_is_preloaded_once(tmp_path):
    library = tmp_path / "liballoc.so"
    library.write_bytes(b"")
    env = host_malloc.malloc_environment({"MCJAX_MALLOC": str(library)}, GLIBC, TCMALLOC)
    assert env["LD_PRELOAD"] == str(library)
    assert host_malloc.malloc_environment(env, GLIBC, TCMALLOC) is None  # no second restart
    with pytest.raises(FileNotFoundError, match="no such allocator library"):
        host_malloc.malloc_environment({"MCJAX_MALLOC": str(tmp_path / "missing.so")}, GLIBC, None)


_ENTRY_POINT = """
import os, sys
print("start", os.getpid(), flush=True)
from mcjax import host_malloc
host_malloc.restart_with_fast_malloc()
print("running", host_malloc.active_allocator(os.environ), sys.argv[1:], flush=True)
"""


@pytest.mark.skipif(host_malloc.glibc_version() is None or host_malloc.glibc_version() < (2, 35)
                    or not sys.platform.startswith("linux"), reason="needs Linux with glibc ≥ 2.35")
def test_entry_point_restarts_once_with_the_same_arguments(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(_ENTRY_POINT)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    result = subprocess.run([sys.executable, str(script), "--flag", "a b"], capture_output=True, text=True,
                            env={**env, "MCJAX_MALLOC": "hugepages"}, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["start", "start", "running"]
    assert lines[0] == lines[1]  # the same process (execve), started twice
    assert lines[2] == "running glibc hugepages ['--flag', 'a b']"


def test_the_allocator_module_loads_without_jax():
    """An entry point restarts before JAX loads only if importing mcjax.host_malloc does not load it."""
    probe = "import sys, mcjax.host_malloc; print(sorted(m for m in ('jax', 'flax', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_public_name_of_the_package_resolves():
    import mcjax

    for name in mcjax.__all__:
        assert getattr(mcjax, name) is not None, name
    assert mcjax.train_ldm.__module__ == "mcjax.train.ldm_pipeline"
    assert mcjax.train.__name__ == "mcjax.train"  # the subpackage, whatever was imported first
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mcjax.nope  # noqa: B018
