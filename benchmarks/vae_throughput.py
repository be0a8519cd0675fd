"""mcVAE training speed: mcjax against the strongest PyTorch we know how to write, both measured in one invocation.

    python benchmarks/vae_throughput.py                    # ≈ 10 min on 2 CPU cores (first torch.compile included)
    python benchmarks/vae_throughput.py --full             # also the sweeps and 10 reference runs end to end
    python benchmarks/vae_throughput.py --torch_device cuda

PyTorch comes in two shapes (tests/torch_vae.py): the reference-shaped loop (eager, DataLoader, as the authors' code)
and ``ExpertTrainer`` (data resident on the device, batches indexed in the step, the whole step compiled by
``torch.compile``, mode and backend printed; R runs as one model by ``torch.func`` stack_module_state + vmap). Every
ratio below is PyTorch time / mcjax time from this one invocation (> 1: mcjax faster):
1. ``step_vs_compiled``: steady-state step of one run, compiled PyTorch vs mcjax (compile timed apart for both);
2. ``run_vs_reference``: the full Table-1 run (``train.py --config configs/geobiked_vae.py:paper``, 393 epochs),
   process start → eval.json with a cold compilation cache, vs the reference-shaped loop's process (→ test MSE),
   the two alternating ``--rounds`` times, each side's fastest kept; the compiled PyTorch run's process and the
   test MSEs are reported beside it;
3. ``sweep10_vs_vmapped`` / ``sweep50_vs_vmapped``: steady-state step of R runs, vmapped compiled PyTorch vs mcjax's
   vmapped program sharded over the devices (as ``train.py``); ``--full`` also times both 50-run sweeps end to end.
What bounds these ratios is printed beside them: each framework's rate on one large matrix product
(``gemm_gflops_*``, the cores' best), the GFLOP/s a sweep would need to be 3× its PyTorch twin
(``sweep{R}_gflops_for_3x``), and the full-run ratio if mcjax's run were its steps alone
(``run_vs_reference_if_only_steps``; ``seconds_besides_steps_for_5x`` is what 5× leaves for the rest).
PyTorch runs with OMP_WAIT_POLICY=PASSIVE and the faster of 1 or all threads (measured here; its processes get the
same), its best settings on a shared CPU. The script exposes one XLA host device per core, as train.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def training_flops_per_step(config, num_keypoints: int, num_conditions: int) -> float:
    """2 flops per multiply-add, × 3 for forward + backward, over every Dense layer, for one batch."""
    m = config.model
    widths = [num_keypoints, m.keypoint_embedding_dim, *m.hidden_dims]
    macs = sum(a * b for a, b in zip(widths, widths[1:])) + widths[-1] * 2 * m.latent_dim
    dec = [m.latent_dim + num_conditions * m.condition_embedding_dim, *reversed(m.hidden_dims), num_keypoints]
    macs += sum(a * b for a, b in zip(dec, dec[1:]))
    return 6.0 * macs * config.train.batch_size


def timed_process(args: list[str], env=None) -> tuple[float, str]:
    """(wall seconds from process start to exit, stdout) of ``python *args``."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout


def mcjax_steady_state(config, runs: int, epochs: int, mesh: bool = True):
    """(compile seconds, ``timed() -> seconds per step``) of the compiled chunk of ``epochs`` epochs for ``runs``
    vmapped runs, sharded over the local devices as train.py does."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from mcjax.compile import compile_loop
    from mcjax.train import mcvae as mcvae_train
    from mcjax.train import sweep

    config = config.copy_and_resolve_references()
    config.sweep.seeds = tuple(range(runs))
    data, _, (stage,) = sweep.prepare_experiment(config)
    trainer, steps_per_epoch = stage.trainer, int(stage.runs.steps_per_epoch[0])
    device_mesh = sweep.run_mesh(runs) if mesh else None
    run_specs, train_data = stage.runs, sweep._train_arrays(data)
    if device_mesh is not None:
        run_specs = jax.device_put(sweep._pad(run_specs, device_mesh.size),
                                   NamedSharding(device_mesh, P(mcvae_train.RUN_AXIS)))
        train_data = jax.device_put(train_data, NamedSharding(device_mesh, P()))
    state = mcvae_train.init_states(trainer, run_specs, train_data, device_mesh)
    fn = mcvae_train.compiled_train_epochs(trainer, epochs, device_mesh)
    start = time.perf_counter()
    compiled = compile_loop(fn.lower(state, run_specs, train_data, jnp.int32(epochs)))  # as train.py
    compile_s = time.perf_counter() - start
    holder = [compiled(state, run_specs, train_data, jnp.int32(1))[0]]  # warm-up
    jax.block_until_ready(holder)

    def timed() -> float:
        start = time.perf_counter()
        holder[0] = compiled(holder[0], run_specs, train_data, jnp.int32(epochs))[0]
        jax.block_until_ready(holder)
        return (time.perf_counter() - start) / (epochs * steps_per_epoch)

    return compile_s, timed


def torch_expert_steady_state(config, data, runs, epochs: int, device: str):
    """(compile + first epoch seconds, ``timed() -> (seconds per step, threads)``, the faster of 1 and all threads)
    of ExpertTrainer."""
    import torch

    from tests.torch_vae import ExpertTrainer

    sparsity = None if runs is None else [config.sparsity.p_start] * runs
    trainer = ExpertTrainer(config, data, num_runs=runs, sparsity=sparsity, device=device)
    start = time.perf_counter()
    trainer.train(1)
    compile_s = time.perf_counter() - start

    def timed() -> tuple[float, int]:
        per_step = {}
        for threads in sorted({1, os.cpu_count()}):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            trainer.train(epochs)
            per_step[threads] = (time.perf_counter() - start) / (epochs * trainer.steps_per_epoch)
        best = min(per_step, key=per_step.get)
        torch.set_num_threads(best)
        return per_step[best], best

    return compile_s, timed


def gemm_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Each framework's best GFLOP/s on one large f32 matrix product (PyTorch: the faster of 1 and all threads): what
    this machine's cores deliver at best, the ceiling a step of small products stays under."""
    import jax
    import jax.numpy as jnp
    import torch

    def best_rate(product) -> float:
        product()  # compile, warm up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
        return 2 * size**3 / best / 1e9

    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    rates = {"jax": best_rate(lambda: matmul(a, a).block_until_ready())}
    threads, x = torch.get_num_threads(), torch.ones(size, size)
    for n in sorted({1, os.cpu_count()}):
        torch.set_num_threads(n)
        rates["torch"] = max(rates.get("torch", 0.0), best_rate(lambda: x @ x))
    torch.set_num_threads(threads)
    return rates


def alternate(torch_timed, jax_timed, rounds: int):
    """The two sides take turns ``rounds`` times (a shared machine's load changes); each keeps its best round.
    Returns (torch seconds per step, its thread count, mcjax seconds per step)."""
    torch_best, jax_best = (float("inf"), 0), float("inf")
    for _ in range(rounds):
        torch_best = min(torch_best, torch_timed())
        jax_best = min(jax_best, jax_timed())
    return (*torch_best, jax_best)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=393, help="epochs of the full-run comparison (Table 1: 393)")
    parser.add_argument("--steady_epochs", type=int, default=10, help="epochs timed for steady-state step time")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds per comparison, steady state and full runs (best kept)")
    parser.add_argument("--sweeps", default="10,50", help="run counts of the vmapped comparisons")
    parser.add_argument("--full", action="store_true", help="also time the 50-run sweeps and 10 reference runs")
    parser.add_argument("--torch_device", default="cpu", help="cpu, or cuda for the GPU comparison")
    args = parser.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from mcjax import runtime

    runtime.set_host_device_count(os.cpu_count())
    import jax
    import torch
    from mcjax.configs.geobiked_vae import get_config

    from mcjax.train.sweep import prepare_experiment
    from tests.torch_vae import COMPILE_BACKEND, COMPILE_MODE, train_torch

    config = get_config("paper")  # the model tests/torch_vae.py implements
    config.train.epochs = args.epochs
    data, _, (stage,) = prepare_experiment(config)
    run_steps = args.epochs * int(stage.runs.steps_per_epoch[0])
    flops = training_flops_per_step(config, data.train_x_NxD.shape[1], data.stats.conditions.num_conditions)
    report = {"machine": f"{os.cpu_count()} CPU cores", "jax_devices": str(jax.devices()),
              "torch_device": args.torch_device, "torch_compile": f"mode={COMPILE_MODE} backend={COMPILE_BACKEND}",
              "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "gflop_per_step": flops / 1e9}
    if args.torch_device == "cpu":
        report.update({f"gemm_gflops_{side}": rate for side, rate in gemm_gflops().items()})

    # 1. steady state, one run
    torch_compile_1, torch_timed = torch_expert_steady_state(config, data, None, args.steady_epochs, args.torch_device)
    jax_compile_1, jax_timed = mcjax_steady_state(config, 1, args.steady_epochs)
    torch_step, threads, jax_step = alternate(torch_timed, jax_timed, args.rounds)
    torch.set_num_threads(threads)
    reference_step = min(train_torch(config, data, epochs=args.steady_epochs, device=args.torch_device)[1]
                         for _ in range(2))
    report.update(torch_threads=threads, torch_reference_ms_per_step=reference_step * 1e3,
                  torch_compiled_ms_per_step=torch_step * 1e3, torch_compile_s=torch_compile_1,
                  mcjax_ms_per_step=jax_step * 1e3, mcjax_compile_s=jax_compile_1,
                  step_vs_reference=reference_step / jax_step, step_vs_compiled=torch_step / jax_step,
                  mcjax_gflops_1run=flops / jax_step / 1e9, torch_gflops_1run=flops / torch_step / 1e9)

    # 2. vmapped runs
    for runs in (int(r) for r in args.sweeps.split(",") if r):
        torch_compile, torch_timed = torch_expert_steady_state(config, data, runs, args.steady_epochs,
                                                               args.torch_device)
        jax_compile, jax_timed = mcjax_steady_state(config, runs, args.steady_epochs)
        torch_step_r, _, jax_step_r = alternate(torch_timed, jax_timed, args.rounds)
        report.update({f"sweep{runs}_torch_ms_per_step": torch_step_r * 1e3, f"sweep{runs}_torch_compile_s":
                       torch_compile, f"sweep{runs}_mcjax_ms_per_step": jax_step_r * 1e3,
                       f"sweep{runs}_mcjax_compile_s": jax_compile,
                       f"sweep{runs}_vs_vmapped": torch_step_r / jax_step_r,
                       f"sweep{runs}_mcjax_gflops": runs * flops / jax_step_r / 1e9,
                       f"sweep{runs}_torch_gflops": runs * flops / torch_step_r / 1e9,
                       f"sweep{runs}_gflops_for_3x": 3 * runs * flops / torch_step_r / 1e9})

    # 3. full runs from process start (PyTorch processes with the thread count measured best above)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("XLA_FLAGS", None)  # train.py sets its own
    with tempfile.TemporaryDirectory() as tmp:
        def mcjax_run(config: str, name: str, cache: str) -> float:
            return timed_process(["train.py", "--config", config, f"--config.train.epochs={args.epochs}",
                                  "--config.train.progress=False", "--workdir", os.path.join(tmp, name),
                                  f"--config.compilation_cache_dir={os.path.join(tmp, cache)}"], env)[0]

        torch_args = ["tests/torch_vae.py", "--epochs", str(args.epochs), "--device", args.torch_device]
        cold = reference = float("inf")
        for r in range(args.rounds):  # the two sides alternate, each keeps its best; each mcjax round a fresh cache
            cold = min(cold, mcjax_run("configs/geobiked_vae.py:paper", f"cold_{r}", f"cache_{r}"))
            seconds, reference_out = timed_process(torch_args, env)
            reference = min(reference, seconds)
        warm = mcjax_run("configs/geobiked_vae.py:paper", "warm", "cache_0")
        expert, expert_out = timed_process([*torch_args, "--expert"], env)
        with open(os.path.join(tmp, "cold_0", "eval.json")) as f:
            mcjax_mse0 = json.load(f)["mse"][0]
        report.update(full_run_mcjax_cold_s=cold, full_run_mcjax_warm_s=warm, full_run_reference_s=reference,
                      full_run_compiled_torch_s=expert, run_vs_reference=reference / cold,
                      run_vs_reference_warm=reference / warm, run_vs_compiled=expert / cold,
                      mcjax_steps_of_run_s=run_steps * jax_step,
                      run_vs_reference_if_only_steps=reference / (run_steps * jax_step),
                      seconds_besides_steps_for_5x=reference / 5 - run_steps * jax_step, mcjax_mse_s0=mcjax_mse0,
                      reference_mse_s0=float(reference_out.split()[-1]), compiled_torch_mse_s0=float(
                          expert_out.split()[-1]))

        if args.full:  # what the defaults leave to the steady-state ratios, end to end
            sweep = mcjax_run("configs/geobiked_vae_sweep.py", "sweep", "cache_0")
            torch_sweep, _ = timed_process(["-c", SWEEP_50.format(root=ROOT, epochs=args.epochs,
                                                                 device=args.torch_device)], env)
            references = sum(timed_process(torch_args, env)[0] for _ in range(10))
            report.update(sweep50_mcjax_s=sweep, sweep50_compiled_torch_s=torch_sweep,
                          sweep50_full_vs_vmapped=torch_sweep / sweep, ten_reference_runs_s=references,
                          ten_runs_reference_vs_sweep50=references / sweep)

    for key, value in report.items():
        print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")
    print(json.dumps(report))
    print(f"RESULT step_vs_compiled={report['step_vs_compiled']:.2f} run_vs_reference={report['run_vs_reference']:.2f}"
          f" sweep10_vs_vmapped={report.get('sweep10_vs_vmapped', float('nan')):.2f}")


# The 50-run sparsity sweep (0.0 … 0.9 × 5 seeds) as one vmapped compiled PyTorch model, from process start.
SWEEP_50 = """
import sys; sys.path.insert(0, {root!r})
from mcjax.configs.geobiked_vae_sweep import get_config
from mcjax.train.sweep import prepare_experiment
from tests.torch_vae import ExpertTrainer
config = get_config(); config.sweep.train_sparsity, config.sweep.seeds = (), ()
trainer = ExpertTrainer(config, prepare_experiment(config)[0], num_runs=50,
                        sparsity=[0.1 * (i // 5) for i in range(50)], device={device!r})
print(float(trainer.train({epochs})[-1].mean()))
"""


if __name__ == "__main__":
    main()
