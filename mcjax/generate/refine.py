"""Refinement of mcLDM images by a large pretrained img2img model: the paper's last stage, for realism.

The mcLDM's images follow their conditions; a pretrained model prompted with those conditions then makes them look
real (the paper's abstract and Table 4): the SDXL refiner through diffusers' ``StableDiffusionXLImg2ImgPipeline``, or
FLUX.1 through ``FluxImg2ImgPipeline``, both loaded from a folder on disk (nothing is downloaded; a hub id works only
when it is already in the local Hugging Face cache). PyTorch, diffusers and transformers are the ``refine`` extra and
are imported only here, inside functions, so ``import mcjax`` works without them.

Settings (``PAPER``): the paper gives the SDXL refiner's guidance 7.5 and strength 0.5, and FLUX's 50 steps and
guidance 30; what it does not state is diffusers' default (SDXL: 50 steps; FLUX: strength 0.6). The authors' code does
not include the refinement. Each image gets its own generator, seeded ``seed + index``, so a result does not depend on
the batch size. Device: CUDA when PyTorch sees it (float16 for SDXL, bfloat16 for FLUX), else the CPU in float32.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from mcjax.errors import InputError

INSTALL = 'pip install -e ".[refine]"'


@dataclasses.dataclass(frozen=True)
class Kind:
    """One refiner: its diffusers class, the classes whose folders it loads, the weights the paper used."""

    pipeline: str
    accepts: tuple[str, ...]  # model_index.json _class_name values with the same components
    weights: str  # the Hugging Face repository of the weights
    cuda_dtype: str


KINDS = {
    "sdxl": Kind("StableDiffusionXLImg2ImgPipeline", ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLPipeline"),
                 "stabilityai/stable-diffusion-xl-refiner-1.0", "float16"),
    "flux": Kind("FluxImg2ImgPipeline", ("FluxImg2ImgPipeline", "FluxPipeline"), "black-forest-labs/FLUX.1-dev",
                 "bfloat16"),
}


@dataclasses.dataclass(frozen=True)
class RefineSettings:
    """How strongly and how long the refiner works on each image."""

    strength: float  # 0 … 1: how much noise is added to the mcLDM image (1 ignores it)
    guidance_scale: float  # SDXL: classifier-free guidance; FLUX.1-dev: its distilled guidance value
    num_steps: int  # denoising steps of the full schedule; img2img runs int(num_steps * strength) of them
    size: int = 0  # > 0: images are resized to size × size before refining (0: the mcLDM's own size)
    batch_size: int = 1  # images per pipeline call

    def validated(self) -> RefineSettings:
        if not 0.0 < self.strength <= 1.0:
            raise InputError(f"Refiner strength {self.strength}: must lie in (0, 1].")
        if self.num_steps < 1 or int(self.num_steps * self.strength) < 1:
            raise InputError(f"Refiner steps {self.num_steps} at strength {self.strength} run no denoising step "
                             f"(img2img runs int(steps * strength)); raise --refine_steps.")
        if self.guidance_scale < 0 or self.size < 0 or self.batch_size < 1:
            raise InputError(f"Refiner settings {self}: guidance and size must be ≥ 0, batch size ≥ 1.")
        return self


PAPER = {"sdxl": RefineSettings(strength=0.5, guidance_scale=7.5, num_steps=50),
         "flux": RefineSettings(strength=0.6, guidance_scale=30.0, num_steps=50)}


@dataclasses.dataclass
class Refiner:
    """A loaded diffusers img2img pipeline and the device it runs on."""

    kind: str
    pipeline: Any
    device: str


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise InputError(f"Unknown refiner {kind!r}; choose from {list(KINDS)}.")
    return KINDS[kind]


def import_torch_diffusers():
    """(torch, diffusers), or an InputError with the command that installs them."""
    try:
        import diffusers
        import torch
        import transformers  # noqa: F401 (the pipelines' text encoders)
    except ImportError as error:
        raise InputError(f"Refining needs the 'refine' extra ({error.name} is not installed): {INSTALL}") from None
    return torch, diffusers


def model_folder(kind: str, model: str) -> str:
    """The local folder of ``model`` (a folder, or a hub id already in the local cache), checked to hold a pipeline
    this refiner can load; InputError otherwise, naming the pipeline class it expects."""
    spec = _kind(kind)
    expected = f"--refine {kind} expects a diffusers {spec.pipeline} folder (e.g. a copy of {spec.weights})"
    if not model:
        raise InputError(f"No refiner weights given (--refine_model DIR): {expected}.")
    folder = os.path.expanduser(model)
    if not os.path.isdir(folder):
        if os.path.exists(folder) or model.count("/") != 1 or model.startswith((".", "/", "~")):
            raise InputError(f"Refiner weights {model!r}: no such folder; {expected}.")
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(model, local_files_only=True)
        except Exception:  # not cached (the hub's error types vary by version): nothing is downloaded
            raise InputError(f"Refiner weights {model!r} are neither a folder nor in the local Hugging Face cache "
                             f"(nothing is downloaded); {expected}.") from None
    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index):
        raise InputError(f"{folder} has no model_index.json; {expected}.")
    with open(index, encoding="utf-8") as f:
        found = json.load(f).get("_class_name")
    if found not in spec.accepts:
        raise InputError(f"{folder} holds a {found}; {expected}.")
    return folder


def default_device() -> str:
    torch, _ = import_torch_diffusers()
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_refiner(kind: str, model: str, device: str | None = None, dtype: str | None = None) -> Refiner:
    """The ``kind`` ("sdxl" or "flux") img2img pipeline from ``model`` on ``device`` (default: CUDA when available,
    else CPU) in ``dtype`` (default: the kind's half precision on CUDA, float32 on the CPU)."""
    torch, diffusers = import_torch_diffusers()
    spec = _kind(kind)
    folder = model_folder(kind, model)
    device = device or default_device()
    dtype = dtype or (spec.cuda_dtype if device.startswith("cuda") else "float32")
    try:
        with warnings.catch_warnings():  # newer diffusers call it dtype; torch_dtype works from 0.32 on
            warnings.filterwarnings("ignore", "`torch_dtype` is deprecated", FutureWarning)
            pipeline = getattr(diffusers, spec.pipeline).from_pretrained(folder, torch_dtype=getattr(torch, dtype),
                                                                         local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{folder} could not be loaded as a {spec.pipeline} ({first_line}); --refine {kind} expects "
                         f"a complete copy of {spec.weights}.") from None
    return Refiner(kind, pipeline.to(device), device)


def _unit_float(images_NxHxWx3) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] images → float32 [0, 1]."""
    images = np.asarray(images_NxHxWx3)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"Images to refine must be [N, H, W, 3]; got shape {images.shape}.")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return np.clip(images.astype(np.float32), 0.0, 1.0)


def resize(images_NxHxWx3: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """float [0, 1] images resized (bicubic) to height × width (default square), e.g. small mcLDM images up to a
    refiner's resolution."""
    from PIL import Image

    width = width or height
    if images_NxHxWx3.shape[1:3] == (height, width):
        return images_NxHxWx3
    return np.stack([np.asarray(Image.fromarray(np.round(image * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC), np.float32) / 255.0 for image in images_NxHxWx3])


def refine_images(refiner: Refiner, images_NxHxWx3, prompts: str | Sequence[str], settings: RefineSettings,
                  seed: int = 0) -> np.ndarray:
    """Refined images, float32 [N, H', W', 3] in [0, 1], from uint8 or float [0, 1] images and one prompt per image
    (or one for all). H' is ``settings.size`` or the input's size, rounded down by the pipeline to its multiple."""
    torch, _ = import_torch_diffusers()
    settings = settings.validated()
    images = _unit_float(images_NxHxWx3)
    if settings.size:
        images = resize(images, settings.size)
    prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(images):
        raise InputError(f"{len(prompts)} prompts for {len(images)} images: give one per image, or one for all.")
    refined = []
    for start in range(0, len(images), settings.batch_size):
        batch = images[start:start + settings.batch_size]
        arguments = dict(prompt=prompts[start:start + len(batch)],
                         image=torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))),
                         strength=settings.strength, guidance_scale=settings.guidance_scale,
                         num_inference_steps=settings.num_steps, output_type="np",
                         generator=[torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(batch))])
        if refiner.kind == "flux":  # FLUX's output size is an argument (default 1024); SDXL keeps the input's
            arguments.update(height=batch.shape[1], width=batch.shape[2])
        with torch.inference_mode():
            refined.append(np.asarray(refiner.pipeline(**arguments).images, np.float32))
    return np.concatenate(refined)


# --- sample.py --refine: checked before sampling, run after it


@dataclasses.dataclass(frozen=True)
class RefinePlan:
    """Everything a refinement needs, checked up front so that bad input stops before minutes of sampling."""

    kind: str
    folder: str
    settings: RefineSettings
    prompt: str
    seed: int

    def record(self) -> dict:
        """What refine.json keeps beside the images: the prompt, the weights and the settings."""
        return {"refiner": self.kind, "pipeline": KINDS[self.kind].pipeline, "model": self.folder,
                "prompt": self.prompt, "seed": self.seed, **dataclasses.asdict(self.settings)}


def plan(kind: str, model: str, prompt: str, seed: int = 0, strength: float | None = None,
         guidance_scale: float | None = None, num_steps: int | None = None, size: int = 0,
         batch_size: int = 1) -> RefinePlan:
    """A checked refinement: the extra installed, the weights' folder of the right class, settings (the paper's
    where None)."""
    folder = model_folder(kind, model)
    import_torch_diffusers()
    chosen = {"strength": strength, "guidance_scale": guidance_scale, "num_steps": num_steps}
    settings = dataclasses.replace(PAPER[kind], size=size, batch_size=batch_size,
                                   **{name: value for name, value in chosen.items() if value is not None})
    return RefinePlan(kind, folder, settings.validated(), prompt, seed)


def plan_for_run(config, names: Sequence[str], given: dict, kind: str, model: str, prompt: str | None = None,
                 seed: int = 0, **settings) -> RefinePlan:
    """``plan`` for images of a run with the conditions ``given``: the prompt is ``prompt`` (a template too) or the
    run's ``config.refine.prompt_template``, filled in (``mcjax.generate.prompts``)."""
    from mcjax.generate import prompts

    template = prompts.resolve_template(prompt, prompts.config_template(config), names)
    return plan(kind, model, prompts.build_prompt(template, given, names), seed, **settings)


def refine_and_write(plan: RefinePlan, images_NxHxWx3, output_dir: str, columns: int = 4) -> list[str]:
    """Writes the raw ``sample_000.png`` … first (kept should the refiner fail), loads the refiner, refines the images
    with the plan's prompt, and writes ``refined_000.png`` …, ``refine.json`` and the grid ``samples.png``."""
    raw = _unit_float(images_NxHxWx3)
    paths = _save_each(raw, output_dir, "sample")
    refiner = load_refiner(plan.kind, plan.folder)
    refined = refine_images(refiner, raw, plan.prompt, plan.settings, plan.seed)
    return paths + write_refined(raw, refined, plan.record(), output_dir, columns)


def _save_each(images_NxHxWx3, output_dir: str, prefix: str) -> list[str]:
    from mcjax.data.images import save_png

    os.makedirs(output_dir, exist_ok=True)
    return [save_png(image, os.path.join(output_dir, f"{prefix}_{i:03d}.png"))
            for i, image in enumerate(images_NxHxWx3)]


def side_by_side(raw_NxHxWx3: np.ndarray, refined_NxHxWx3: np.ndarray, columns: int = 4) -> np.ndarray:
    """One grid, uint8: each row of up to ``columns`` raw images followed by the row of their refined images (raw ones
    resized to the refined size)."""
    from mcjax.data.images import image_grid

    raw = _unit_float(raw_NxHxWx3)
    refined = _unit_float(refined_NxHxWx3)
    raw = resize(raw, *refined.shape[1:3])
    n, shape = len(raw), refined.shape[1:]
    rows = -(-n // columns)
    tiles = np.ones((rows, 2, columns, *shape), np.float32)
    for i in range(n):
        tiles[i // columns, 0, i % columns] = raw[i]
        tiles[i // columns, 1, i % columns] = refined[i]
    return image_grid(tiles.reshape(2 * rows, columns, *shape))


def write_refined(raw_NxHxWx3, refined_NxHxWx3, record: dict, output_dir: str, columns: int = 4) -> list[str]:
    """``refined_000.png`` …, ``refine.json`` (the prompt and settings) and ``samples.png`` (raw and refined rows)."""
    from mcjax.data.images import save_png
    from mcjax.io import atomic_write_text

    paths = _save_each(refined_NxHxWx3, output_dir, "refined") + [os.path.join(output_dir, "refine.json")]
    atomic_write_text(paths[-1], json.dumps(record, indent=1) + "\n")
    grid = side_by_side(raw_NxHxWx3, refined_NxHxWx3, columns)
    return paths + [save_png(grid, os.path.join(output_dir, "samples.png"))]
