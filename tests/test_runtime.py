"""mcjax.runtime: which allocator an entry point restarts with, and that it restarts exactly once."""

import os
import subprocess
import sys

import pytest

from mcjax import runtime

GLIBC = (2, 36)
TCMALLOC = "libtcmalloc_minimal.so.4"


def test_auto_prefers_tcmalloc_and_keeps_other_preloads():
    env = runtime.malloc_environment({"LD_PRELOAD": "libfoo.so", "PATH": "/bin"}, GLIBC, TCMALLOC)
    assert env["LD_PRELOAD"] == f"{TCMALLOC} libfoo.so"
    assert env["PATH"] == "/bin"
    assert runtime.active_allocator(env) == "tcmalloc"


def test_auto_falls_back_to_glibc_hugepages_keeping_other_tunables():
    env = runtime.malloc_environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}, GLIBC, None)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"
    assert runtime.active_allocator(env) == "glibc hugepages"
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
    assert runtime.malloc_environment(environ, glibc, None) is None


def test_explicit_choices():
    assert "LD_PRELOAD" not in runtime.malloc_environment({"MCJAX_MALLOC": "hugepages"}, GLIBC, TCMALLOC)
    with pytest.raises(RuntimeError, match="libtcmalloc-minimal4"):
        runtime.malloc_environment({"MCJAX_MALLOC": "tcmalloc"}, GLIBC, None)
    with pytest.raises(RuntimeError, match="glibc ≥ 2.35"):
        runtime.malloc_environment({"MCJAX_MALLOC": "hugepages"}, (2, 31), None)
    with pytest.raises(ValueError, match="MCJAX_MALLOC='jemalloc' is not one of"):
        runtime.malloc_environment({"MCJAX_MALLOC": "jemalloc"}, GLIBC, None)


def test_a_library_path_is_preloaded_once(tmp_path):
    library = tmp_path / "liballoc.so"
    library.write_bytes(b"")
    env = runtime.malloc_environment({"MCJAX_MALLOC": str(library)}, GLIBC, TCMALLOC)
    assert env["LD_PRELOAD"] == str(library)
    assert runtime.malloc_environment(env, GLIBC, TCMALLOC) is None  # no second restart
    with pytest.raises(FileNotFoundError, match="no such allocator library"):
        runtime.malloc_environment({"MCJAX_MALLOC": str(tmp_path / "missing.so")}, GLIBC, None)


_ENTRY_POINT = """
import os, sys
print("start", os.getpid(), flush=True)
from mcjax import runtime
runtime.restart_with_fast_malloc()
print("running", runtime.active_allocator(os.environ), sys.argv[1:], flush=True)
"""


@pytest.mark.skipif(runtime.glibc_version() is None or runtime.glibc_version() < (2, 35)
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
    """An entry point restarts before JAX loads only if importing mcjax.runtime does not load it."""
    probe = "import sys, mcjax.runtime; print(sorted(m for m in ('jax', 'flax', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_public_name_of_the_api_resolves():
    import mcjax.api as mc

    for name in mc.__all__:
        assert getattr(mc, name) is not None, name
    assert mc.train_ldm.__module__ == "mcjax.train.ldm_pipeline"
    with pytest.raises(ValueError, match="Unknown config.job 'nope'"):
        mc.run_job({"job": "nope"}, "unused")


_GLOBAL_SETTINGS = """
import os, sys
before = dict(os.environ)
import mcjax, mcjax.configs.geobiked_ldm
assert "jax" not in sys.modules, "importing mcjax or a config loads JAX"
import jax
settings = (jax.config.jax_compilation_cache_dir, jax.config.jax_platforms)
import mcjax.api
mcjax.api.load_table  # touch the API
assert dict(os.environ) == before, "the environment changed"
assert (jax.config.jax_compilation_cache_dir, jax.config.jax_platforms) == settings, "a JAX setting changed"
assert "matplotlib.pyplot" not in sys.modules, "pyplot (a global backend) was loaded"
print("ok")
"""


def test_importing_the_library_changes_no_global_setting():
    result = subprocess.run([sys.executable, "-c", _GLOBAL_SETTINGS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_distributed_needs_every_setting(monkeypatch):
    for variable in runtime.DISTRIBUTED_ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    assert runtime.initialize_distributed() is False  # a single-process run
    monkeypatch.setenv("MCJAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="MCJAX_COORDINATOR_ADDRESS"):
        runtime.initialize_distributed()


def test_host_device_count_is_set_once(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1")
    runtime.set_host_device_count(3)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=3"
    runtime.set_host_device_count(5)  # a count already given (by the user) is kept
    assert os.environ["XLA_FLAGS"].endswith("device_count=3")


@pytest.mark.parametrize("error,status", [("input", 2), ("missing", 2), ("nan", 1)])
def test_input_errors_print_one_line_and_exit(error, status, capsys, monkeypatch):
    from mcjax.errors import InputError

    raised = {"input": InputError("bad value"), "missing": FileNotFoundError("no table"),
              "nan": FloatingPointError("loss is nan")}[error]

    def main(argv):
        raise raised

    monkeypatch.delenv("MCJAX_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_:
        runtime.exit_on_input_errors(main)([])
    assert exit_.value.code == status
    assert capsys.readouterr().err == f"error: {raised}\n"
    monkeypatch.setenv("MCJAX_TRACEBACK", "1")  # the traceback on request
    with pytest.raises(type(raised)):
        runtime.exit_on_input_errors(main)([])


def test_internal_errors_keep_their_traceback(monkeypatch):
    monkeypatch.delenv("MCJAX_TRACEBACK", raising=False)

    def main(argv):
        raise ValueError("shapes (2,) and (3,) are incompatible")  # a plain ValueError is no input error

    with pytest.raises(ValueError, match="incompatible"):
        runtime.exit_on_input_errors(main)([])


def test_image_jobs_get_xla_cpus_own_convolution_kernels_and_the_mcvae_does_not(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1")
    runtime.set_xla_flags_for_job("mcvae")
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1"
    runtime.set_xla_flags_for_job("ldm")
    assert os.environ["XLA_FLAGS"] == f"--xla_cpu_foo=1 {runtime.IMAGE_XLA_FLAGS}"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")  # the user's choice is kept
    runtime.set_xla_flags_for_job("first_stage")
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
