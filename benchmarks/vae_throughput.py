"""mcVAE training speed: mcjax vs a straightforward PyTorch loop, measured side by side in one run.

    python benchmarks/vae_throughput.py            # everything (≈ 10 min on 2 CPU cores)
    python benchmarks/vae_throughput.py --no-sweep --epochs 100

Measures, on the same machine in the same invocation:
1. steady-state step time: PyTorch (eager, DataLoader) vs mcjax (compiled scan), with mcjax's compile time apart;
2. a full Table-1 run from process start to the test MSE / eval.json, both frameworks as fresh processes; mcjax
   with a cold and with a warm persistent compilation cache;
3. one vmapped R-run program vs R sequential mcjax runs (and vs R PyTorch runs, from the measured per-step time);
4. optionally the 50-run sparsity sweep (configs/geobiked_vae_sweep.py) as one process.
Achieved GFLOP/s use the model's exact multiply-add count (×2 flops, ×3 for forward + backward) and are compared
with --peak_gflops (166 ≈ 2 AVX-512 cores at 2.6 GHz). No XLA_FLAGS are set by this script; it prints them.
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


def timed_process(args: list[str], env=None) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def mcjax_steady_state(config, runs: int, epochs: int):
    """(compile seconds, seconds per step) of the compiled chunk for ``runs`` vmapped runs."""
    import jax
    import jax.numpy as jnp

    from mcjax.train import mcvae as mcvae_train
    from mcjax.train import sweep

    config = config.copy_and_resolve_references()
    config.sweep.seeds = tuple(range(runs))
    data, _, (stage,) = sweep.prepare_experiment(config)
    trainer, run_specs, steps_per_epoch = stage.trainer, stage.runs, int(stage.runs.steps_per_epoch[0])
    train_data = sweep._train_arrays(data)
    state = mcvae_train.init_states(trainer, run_specs, train_data)
    fn = mcvae_train.compiled_train_epochs(trainer, epochs)
    start = time.perf_counter()
    compiled = fn.lower(state, run_specs, train_data, jnp.int32(epochs)).compile()
    compile_s = time.perf_counter() - start
    state, _ = compiled(state, run_specs, train_data, jnp.int32(1))  # warm-up
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, _ = compiled(state, run_specs, train_data, jnp.int32(epochs))
    jax.block_until_ready(state)
    return compile_s, (time.perf_counter() - start) / (epochs * steps_per_epoch), trainer.epochs * steps_per_epoch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=393, help="epochs of the full-run comparison (Table 1: 393)")
    parser.add_argument("--steady_epochs", type=int, default=20, help="epochs timed for steady-state step time")
    parser.add_argument("--runs", type=int, default=10, help="runs of the vmapped-vs-sequential comparison")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--peak_gflops", type=float, default=166.0)
    parser.add_argument("--torch_device", default="cpu", help="cpu, or cuda for the GPU comparison")
    args = parser.parse_args()

    import torch
    from mcjax.configs.geobiked_vae import get_config

    from mcjax.train.sweep import prepare_experiment
    from tests.torch_vae import train_torch

    config = get_config("paper")  # the model tests/torch_vae.py implements
    config.train.epochs = args.epochs
    data = prepare_experiment(config)[0]
    spec = data.stats.conditions
    flops = training_flops_per_step(config, data.train_x_NxD.shape[1], spec.num_conditions)
    import jax

    report = {"machine": f"{os.cpu_count()} CPU cores", "jax_devices": str(jax.devices()),
              "torch_threads": torch.get_num_threads(), "torch_device": args.torch_device,
              "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "gflop_per_step": flops / 1e9}

    # 1. steady state
    _, torch_step, _ = train_torch(config, data, epochs=args.steady_epochs, device=args.torch_device)
    compile_1, jax_step, steps = mcjax_steady_state(config, 1, args.steady_epochs)
    compile_r, jax_step_r, _ = mcjax_steady_state(config, args.runs, args.steady_epochs)
    report.update(torch_ms_per_step=torch_step * 1e3, mcjax_ms_per_step=jax_step * 1e3, mcjax_compile_s=compile_1,
                  step_speedup=torch_step / jax_step,
                  mcjax_gflops_1run=flops / jax_step / 1e9,
                  mcjax_gflops_vmapped=args.runs * flops / jax_step_r / 1e9,
                  mcjax_ms_per_run_step_vmapped=jax_step_r / args.runs * 1e3, mcjax_compile_vmapped_s=compile_r)
    report["fraction_of_peak_vmapped"] = report["mcjax_gflops_vmapped"] / args.peak_gflops

    # 2. full runs from process start
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "xla_cache")
        common = ["train.py", "--config", "configs/geobiked_vae.py:paper", f"--config.train.epochs={args.epochs}",
                  "--config.train.progress=False", f"--config.compilation_cache_dir={cache}"]
        cold = timed_process([*common, "--workdir", os.path.join(tmp, "cold")])
        warm = timed_process([*common, "--workdir", os.path.join(tmp, "warm")])
        torch_full = timed_process(["tests/torch_vae.py", "--epochs", str(args.epochs),
                                    "--device", args.torch_device])
        with open(os.path.join(tmp, "warm", "eval.json")) as f:
            mcjax_mse0 = json.load(f)["mse"][0]
        report.update(full_run_torch_s=torch_full, full_run_mcjax_cold_s=cold, full_run_mcjax_warm_s=warm,
                      full_run_speedup_cold=torch_full / cold, full_run_speedup_warm=torch_full / warm,
                      mcjax_mse_s0=mcjax_mse0)

        # 3. vmapped R runs vs R sequential runs (``steps``: the steps of one full run)
        vmapped = compile_r + jax_step_r * steps
        sequential = compile_1 + args.runs * jax_step * steps
        report.update(runs=args.runs, vmapped_runs_s=vmapped, sequential_mcjax_runs_s=sequential,
                      sequential_torch_runs_s=args.runs * torch_step * steps,
                      vmapped_vs_sequential_mcjax=sequential / vmapped,
                      vmapped_vs_sequential_torch=args.runs * torch_step * steps / vmapped)

        # 4. the 50-run sweep as a user runs it
        if args.sweep:
            sweep = timed_process(["train.py", "--config", "configs/geobiked_vae_sweep.py",
                                   f"--config.train.epochs={args.epochs}", "--config.train.progress=False",
                                   f"--config.compilation_cache_dir={cache}", "--workdir", os.path.join(tmp, "sweep")])
            report.update(sweep_50_runs_s=sweep, sweep_vs_50_torch_runs=50 * torch_full / sweep)

    for key, value in report.items():
        print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
