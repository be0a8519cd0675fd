"""mcLDM U-Net throughput: mcjax vs its PyTorch twin, same weights and batch, side by side.

    python benchmarks/unet_throughput.py                      # CPU: batch 8, 20 DDIM steps, ≈ 3-5 min on 2 cores
    python benchmarks/unet_throughput.py --batch_size 64 --torch_device cuda [--dtype bfloat16]  # one GPU

The default model is the paper's GeoBiked U-Net, the authors' layout (``--layout reference``,
``mcjax.models.unet_reference``, twin tests/torch_unet_reference.py: 64 → 128 → 256 → 512 channels, 4 blocks per
level, attention at levels 1,2,3 with 8 heads × 64, SELU, dropout 0.05 in training, 115.8 M parameters besides the
condition embedding); ``--layout mcjax`` measures mcjax's own layout (``ConditionalUNet``, twin tests/torch_unet.py,
multipliers 1,2,4,4: 53.6 M). On 32×32×4 latents with GeoBiked's conditions by default. Measured in one invocation,
each framework in a process of its own, taking turns:

1. training steps (latents/s): ``mcjax.train.ldm.compiled_train_steps(trainer, 1, mesh)`` in a host loop vs
   ``torch_unet.train_step`` (AdamW, ε-MSE on masked conditions, EMA), same initial weights and data;
2. DDIM sampling (images/s): ``mcjax.diffusion.ddim_sample`` jitted vs ``torch_unet.ddim_sample`` from the same x_T
   (with eta = 0 both are deterministic, so the final samples are compared too);
3. parameter counts (equal by construction), compile times apart from throughput, and on accelerators the model
   FLOP utilisation: ``mcjax.flops.model_flops`` (matrix products and convolutions of the traced step or sampler;
   XLA's cost analysis leaves out cuDNN's convolutions on GPUs) over the measured time over ``--peak_tflops``.

Compute dtype: ``--dtype bfloat16`` is the U-Net's ``dtype=bfloat16`` for mcjax and autocast(bfloat16) for
PyTorch. On GPUs, float32 products use TF32 in both (JAX's default precision; set for PyTorch here).

Unless XLA_FLAGS is already set, the script sets ``mcjax.runtime.IMAGE_XLA_FLAGS`` (as train.py and sample.py do for
image jobs), an XLA:CPU option that leaves convolutions and dots to XLA's own kernels instead of YNNPACK (no effect
on GPUs). It is the faster setting for mcjax's layout on 2 CPU cores: 1.87 against 2.20 s per training step and 7.7
against 8.9 s per 20-step DDIM run (batch 8, same machine, consecutive runs). Run with ``XLA_FLAGS=`` to measure
without it. Unless OMP_WAIT_POLICY is set, it is PASSIVE, the faster setting for PyTorch on a shared CPU: with other
processes' jobs on the 2 cores, PyTorch's default busy-waiting OpenMP threads made its U-Net steps 5-8× slower
(one-block-per-level variant; run with OMP_WAIT_POLICY=ACTIVE to measure that). In float32 the two samplers end
~1e-3 apart after 20 steps; in bfloat16 the frameworks round differently and DDIM's 1/sqrt(abar) at t = T-1
magnifies it. Each framework's throughput is its best round; the rounds alternate between the frameworks so that a
shared machine's load falls on both alike.

Both frameworks run on the allocator ``mcjax.runtime`` picks (tcmalloc if the system has it, else glibc's huge
pages; the record's "malloc"): the script restarts itself with it, as train.py does. ``MCJAX_MALLOC=system``
measures with glibc's defaults, under which every XLA:CPU step faults its temporaries in afresh.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from functools import partial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mcjax import runtime  # noqa: E402  (light: JAX loads later, after XLA_FLAGS is set)

PEAK_TFLOPS = {"bfloat16": 989.0, "float32": 494.5}  # H100/H200 SXM dense: bf16, TF32 tensor cores


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=8, help="training and sampling batch")
    p.add_argument("--train_iters", type=int, default=1, help="training steps per timed round")
    p.add_argument("--train_rounds", type=int, default=4, help="rounds, alternating between the frameworks")
    p.add_argument("--sample_steps", type=int, default=20, help="DDIM steps per sample")
    p.add_argument("--sample_iters", type=int, default=1, help="sampling runs per timed round")
    p.add_argument("--sample_rounds", type=int, default=2)
    p.add_argument("--guidance_scale", type=float, default=1.0, help="≠ 1 doubles the batch of every step")
    p.add_argument("--image_size", type=int, default=32, help="latent height and width")
    p.add_argument("--latent_channels", type=int, default=4)
    p.add_argument("--num_latents", type=int, default=256, help="rows of the on-device training set")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--torch_device", default="cpu", help="cpu, or cuda on a GPU machine")
    p.add_argument("--torch_memory_format", choices=("auto", "channels_last", "contiguous"), default="auto",
                   help="auto: contiguous (NCHW) on CPUs, where it measured 2-5%% faster, channels_last on GPUs")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="peak FLOP/s of the accelerator for MFU (default: H100/H200 dense for --dtype)")
    p.add_argument("--skip", choices=("none", "mcjax", "torch"), default="none", help="time one framework only")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    m = p.add_argument_group("model (config.model fields)")
    m.add_argument("--layout", choices=("reference", "mcjax"), default="reference",
                   help="reference: the authors' network (the paper's); mcjax: mcjax's own, smaller layout")
    m.add_argument("--base_channels", type=int, default=64)
    m.add_argument("--channel_multipliers", type=ints, default=None, help="default: 1,2,4,8 (reference), 1,2,4,4")
    m.add_argument("--blocks_per_level", type=int, default=4)
    m.add_argument("--attention_levels", type=ints, default=(1, 2, 3))
    m.add_argument("--num_heads", type=int, default=8)
    m.add_argument("--head_dim", type=int, default=64)
    m.add_argument("--dropout", type=float, default=0.05)
    m.add_argument("--activation", default="selu")
    m.add_argument("--time_embedding_dim", type=int, default=128)
    m.add_argument("--condition_embedding_dim", type=int, default=10)
    m.add_argument("--condition_channels", type=int, default=None, help="default: 10 (reference), 32")
    args = p.parse_args(argv)
    reference = args.layout == "reference"
    if args.channel_multipliers is None:
        args.channel_multipliers = (1, 2, 4, 8) if reference else (1, 2, 4, 4)
    if args.condition_channels is None:
        args.condition_channels = 10 if reference else 32
    args.numerical_missing = "paper" if reference else "indicator"  # the authors' -1; mcjax's default
    return args


def model_fields(args) -> dict:
    """The ``config.model`` block of the benchmarked U-Net (mcjax.models.ldm.unet_from_config)."""
    names = ("layout", "base_channels", "channel_multipliers", "blocks_per_level", "attention_levels", "num_heads",
             "head_dim", "dropout", "activation", "time_embedding_dim", "condition_embedding_dim",
             "condition_channels", "numerical_missing")
    return {name: getattr(args, name) for name in names}


def torch_model(args, spec):
    """The PyTorch twin of the benchmarked U-Net (tests/torch_unet.py or tests/torch_unet_reference.py)."""
    from tests import torch_unet, torch_unet_reference

    fields = {k: v for k, v in model_fields(args).items() if k != "layout"}
    common = dict(in_channels=args.latent_channels, out_channels=args.latent_channels)
    if args.layout == "mcjax":
        return torch_unet.ConditionalUNet(spec.num_categories, len(spec.numerical_names), **common, **fields)
    fields["levels"] = len(fields.pop("channel_multipliers"))
    return torch_unet_reference.ReferenceUNet(spec.num_categories, len(spec.numerical_names), **common, **fields)


def geobiked_conditions(num_rows: int):
    """(ConditionSpec, the first ``num_rows`` encoded GeoBiked conditions), as tests/test_ldm_train.py builds them."""
    import numpy as np
    from mcjax.configs.geobiked_vae import get_config

    from mcjax.data import tables

    table = tables.table_from_config(get_config().data)
    stats = tables.TableStats.fit(table)
    rows = np.arange(num_rows) % len(table)
    return stats.conditions, stats.encode_conditions(table.take(rows))


def time_loop(run, iters: int, sync) -> float:
    """Seconds per iteration of ``run`` over ``iters`` iterations, synchronised at the end."""
    start = time.perf_counter()
    out = None
    for _ in range(iters):
        out = run()
    sync(out)
    return (time.perf_counter() - start) / iters


def side_process(name: str, args, inputs: dict, conn) -> None:
    """One framework's side in a process of its own: builds it, sends its summary (``inputs`` for the other side
    included), then times ``(task, iters)`` rounds on request until it receives None.

    A process per framework, as each is used: no allocator, thread pool or device context is shared.
    """
    import numpy as np

    spec, conditions = geobiked_conditions(max(args.num_latents, args.batch_size))
    x0 = np.random.default_rng(0).normal(size=(len(conditions.cat_BxK), args.image_size, args.image_size,
                                               args.latent_channels)).astype(np.float32)
    if name == "mcjax":
        import jax

        side, initial, x_T = mcjax_side(args, spec, conditions, x0, timed=args.skip != "mcjax")
        side["inputs"] = {"initial": initial, "x_T": x_T}
        side["platform"] = {"device": str(jax.devices()[0]), "backend": jax.default_backend()}
    else:
        side = torch_side(args, spec, conditions, x0, inputs["initial"], inputs["x_T"])
    conn.send({key: value for key, value in side.items() if not callable(value)})
    warm = set()
    while (request := conn.recv()) is not None:
        task, iters = request
        if task not in warm:  # the first run of a task is not timed
            side["sync"](side[task]())
            warm.add(task)
        conn.send(time_loop(side[task], iters, side["sync"]))
    conn.close()


def start_side(name: str, args, inputs: dict):
    """(process, connection, summary) of a ``side_process`` started with the spawn method (fresh interpreter)."""
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    process = context.Process(target=side_process, args=(name, args, inputs, child_conn))
    process.start()
    child_conn.close()
    try:
        summary = conn.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"The {name} side exited with code {process.exitcode} while building.") from None
    return process, conn, summary


def interleaved(connections: dict, task: str, iters: int, rounds: int) -> dict:
    """{side: [seconds per iteration of each round]}: the sides take turns, so a shared machine's load falls on
    both alike. Each side's ``task`` is warm (run once) before its first round."""
    times = {name: [] for name in connections}
    for _ in range(rounds):
        for name, conn in connections.items():
            conn.send((task, iters))
            times[name].append(conn.recv())
    return times


def mcjax_side(args, spec, conditions, x0_NxHxWxC, timed: bool = True):
    """mcjax's training step and sampler, compiled: (side, initial variables as numpy, x_T [B, H, W, C]).

    The side holds ``train`` and ``sample`` callables, ``sync``, ``samples`` (the first run's output, also the
    sampler's warm-up), parameter count, compile times and FLOPs. With ``timed=False`` the side is empty: only
    the initial variables and x_T, for PyTorch alone.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from mcjax.configs.geobiked_ldm import get_config
    from ml_collections import ConfigDict

    from mcjax import diffusion, schedules
    from mcjax.compile import run_once
    from mcjax.conditions import all_missing
    from mcjax.flops import model_flops
    from mcjax.models.ldm import unet_from_config
    from mcjax.train import ldm

    model = unet_from_config(ConfigDict({**model_fields(args), "dtype": args.dtype}), spec, args.latent_channels)
    sparsity = get_config().sparsity  # the paper's mcLDM schedule: linear 0.1 → 0.25
    schedule = diffusion.make_noise_schedule("linear", 1000)
    trainer = ldm.LDMTrainer(model, schedule, optax.adamw(args.learning_rate), schedules.schedule_params(sparsity),
                             total_steps=10_000, batch_size=args.batch_size, ema_decay=0.9999)
    mesh = ldm.data_mesh()
    key = jax.random.key(0, impl="rbg")
    data = ldm.LDMData(jnp.asarray(x0_NxHxWxC), jax.tree.map(jnp.asarray, conditions))
    state = run_once(lambda k, d: ldm.init_state(trainer, k, d), key, data)
    initial = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    shape = (args.batch_size, args.image_size, args.image_size, args.latent_channels)
    sample_key = jax.random.key(1)
    x_T = np.asarray(diffusion.initial_noise(sample_key, shape))
    if not timed:
        return {}, initial, x_T
    side = {"params": int(sum(np.size(p) for p in jax.tree.leaves(initial["params"]))),
            "sync": jax.block_until_ready}
    state, data = ldm.replicate(state, mesh), ldm.replicate(data, mesh)

    train_steps = ldm.compiled_train_steps(trainer, 1, mesh)
    side["train_flops"] = model_flops(train_steps, state, data, key)
    start = time.perf_counter()
    step = train_steps.lower(state, data, key).compile()
    side["train_compile_s"] = time.perf_counter() - start
    holder = [state]  # the state is donated: each step replaces it

    def train():
        holder[0], metrics = step(holder[0], data, key)
        return metrics

    cond = jax.tree.map(lambda a: jnp.asarray(a[:args.batch_size]), conditions)
    uncond = all_missing(spec.num_categories, len(spec.numerical_names), args.batch_size)

    def sample(variables, cond, uncond, key):
        denoise = partial(model.apply, variables)
        return diffusion.ddim_sample(schedule, denoise, shape, cond, uncond, key, num_steps=args.sample_steps,
                                     guidance_scale=args.guidance_scale)

    variables = jax.device_put(initial)
    start = time.perf_counter()
    sampler = jax.jit(sample).lower(variables, cond, uncond, sample_key).compile()
    side["sample_compile_s"] = time.perf_counter() - start
    side["sample_flops"] = model_flops(sample, variables, cond, uncond, sample_key)
    side["train"] = train
    side["sample"] = lambda: sampler(variables, cond, uncond, sample_key)
    side["samples"] = np.asarray(side["sample"]())
    return side, initial, x_T


def torch_side(args, spec, conditions, x0_NxHxWxC, initial, x_T_BxHxWxC):
    """The PyTorch twin's training step and sampler, as a side like ``mcjax_side``'s."""
    import numpy as np
    import torch

    from mcjax import diffusion
    from tests import torch_unet

    device = torch.device(args.torch_device)
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count())
    else:
        torch.backends.cuda.matmul.allow_tf32 = True  # JAX's default float32 precision on GPUs
        torch.backends.cudnn.allow_tf32 = True
    channels_last = args.torch_memory_format == "channels_last" or (args.torch_memory_format == "auto"
                                                                     and device.type != "cpu")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    autocast = torch.bfloat16 if args.dtype == "bfloat16" else None
    model = torch_model(args, spec)
    torch_unet.load_flax_params(model, initial["params"], initial["batch_stats"])
    model = model.to(device=device, memory_format=memory_format)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def nchw(a):
        return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).to(device).contiguous(memory_format=memory_format)

    x0 = nchw(x0_NxHxWxC)
    cat = torch.from_numpy(np.array(conditions.cat_BxK)).long().to(device)
    num = torch.from_numpy(np.array(conditions.num_BxJ)).to(device)
    alphas_cumprod = torch.from_numpy(np.array(diffusion.make_noise_schedule("linear", 1000).alphas_cumprod))
    side = {"params": torch_unet.count_parameters(model), "sync": lambda _: sync(),
            "memory_format": "channels_last" if channels_last else "contiguous"}

    def sample():
        with torch.inference_mode():
            return torch_unet.ddim_sample(model, alphas_cumprod, nchw(x_T_BxHxWxC), cat[:args.batch_size],
                                          num[:args.batch_size], args.sample_steps,
                                          guidance_scale=args.guidance_scale, autocast_dtype=autocast)

    side["sample"] = sample
    side["samples"] = sample().float().permute(0, 2, 3, 1).cpu().numpy()  # from the weights mcjax samples with
    state = torch_unet.TrainState(model, args.learning_rate)
    side["train"] = partial(torch_unet.train_step, state, x0, cat, num, alphas_cumprod.to(device), args.batch_size,
                            0.1, autocast_dtype=autocast)
    return side


def report(args, platform: dict, jx: dict, pt: dict, times: dict):
    """Prints the JSON record and a markdown table of it. Throughput uses each side's best round."""
    import numpy as np

    b = args.batch_size
    accelerator = platform["backend"] != "cpu"
    peak = args.peak_tflops or PEAK_TFLOPS[args.dtype]
    record = {**platform, "cpu_count": os.cpu_count(),
              "torch_device": args.torch_device, "torch_memory_format": pt.get("memory_format"),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
              "malloc": runtime.active_allocator(os.environ),
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "dtype": args.dtype, "batch_size": b,
              "latent_shape": [args.image_size, args.image_size, args.latent_channels],
              "train_iters": args.train_iters, "train_rounds": args.train_rounds, "sample_steps": args.sample_steps,
              "sample_iters": args.sample_iters, "sample_rounds": args.sample_rounds,
              "guidance_scale": args.guidance_scale, **{k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in model_fields(args).items()}}
    best = {}
    for name, side in (("mcjax", jx), ("torch", pt)):
        if not side:
            continue
        record[f"{name}_params"] = side["params"]
        for task, unit in (("train", "latents"), ("sample", "images")):
            rounds = times[task][name]
            best[name, task] = min(rounds)
            record[f"{name}_{task}_s_per_round"] = [round(t, 4) for t in rounds]
            record[f"{name}_{task}_median_s"] = round(statistics.median(rounds), 4)
            record[f"{name}_{task}_{unit}_per_s"] = round(b / best[name, task], 4)
    if jx:
        record["mcjax_train_compile_s"] = round(jx["train_compile_s"], 2)
        record["mcjax_sample_compile_s"] = round(jx["sample_compile_s"], 2)
        record["train_gflop_per_step"] = round(jx["train_flops"] / 1e9, 2)
        record["sample_gflop_per_run"] = round(jx["sample_flops"] / 1e9, 2)
        for name in ("mcjax", "torch") if pt else ("mcjax",):  # the same model FLOPs over each side's time
            for task in ("train", "sample"):
                tflops = jx[f"{task}_flops"] / best[name, task] / 1e12
                record[f"{name}_{task}_tflop_per_s"] = round(tflops, 4)
                if accelerator:
                    record[f"{name}_{task}_mfu"] = round(tflops / peak, 4)
        if accelerator:
            record["peak_tflops"] = peak
    if jx and pt:
        for task in ("train", "sample"):
            record[f"{task}_ratio_mcjax_over_torch"] = round(best["torch", task] / best["mcjax", task], 3)
        record["sample_max_abs_diff"] = float(np.max(np.abs(jx["samples"] - pt["samples"])))
        if jx["params"] != pt["params"]:
            raise AssertionError(f"Parameter counts differ: mcjax {jx['params']}, PyTorch {pt['params']}.")
    print(json.dumps(record))

    def cell(key, fmt="{:.3g}"):
        return fmt.format(record[key]) if key in record else "–"

    rows = [
        ("training (latents/s)", cell("torch_train_latents_per_s"), cell("mcjax_train_latents_per_s"),
         cell("train_ratio_mcjax_over_torch", "{:.2f}×")),
        (f"DDIM, {args.sample_steps} steps (images/s)", cell("torch_sample_images_per_s"),
         cell("mcjax_sample_images_per_s"), cell("sample_ratio_mcjax_over_torch", "{:.2f}×")),
        ("parameters", cell("torch_params", "{:,}"), cell("mcjax_params", "{:,}"), ""),
        ("compile: train step / sampler (s)", "–",
         f"{cell('mcjax_train_compile_s', '{:.1f}')} / {cell('mcjax_sample_compile_s', '{:.1f}')}", ""),
    ]
    if accelerator and jx:
        mfu = [f"{cell(f'{name}_train_mfu', '{:.1%}')} / {cell(f'{name}_sample_mfu', '{:.1%}')}"
               for name in ("torch", "mcjax")]
        rows.append((f"MFU train / sample (peak {peak:g} TFLOP/s)", *mfu, ""))
    print("\n| measurement | PyTorch | mcjax | ratio |\n| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", runtime.IMAGE_XLA_FLAGS)  # read when jax is first imported, just below
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch starts its OpenMP threads
    if args.torch_device.startswith("cuda") and args.skip == "none":  # JAX takes 75 % of the GPU by default
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    runtime.restart_with_fast_malloc()  # both frameworks then share the faster allocator
    processes, summaries, inputs = {}, {}, {}
    for name in ("mcjax", "torch"):  # mcjax first: it makes the initial weights and x_T that PyTorch starts from
        if name == "torch" and args.skip == "torch":
            break
        process, conn, summaries[name] = start_side(name, args, inputs)
        processes[name] = (process, conn)
        inputs = summaries[name].pop("inputs", inputs)
    platform = summaries["mcjax"].pop("platform")
    timed = {name: conn for name, (_, conn) in processes.items() if summaries[name]}
    try:
        times = {"train": interleaved(timed, "train", args.train_iters, args.train_rounds),
                 "sample": interleaved(timed, "sample", args.sample_iters, args.sample_rounds)}
    finally:
        for process, conn in processes.values():
            conn.send(None)
            process.join()
    report(args, platform, summaries["mcjax"], summaries.get("torch", {}), times)


if __name__ == "__main__":
    main()
