"""Loading and saving ``AutoencoderKL`` weights in the diffusers format (config.json + safetensors).

A diffusers key maps to a Flax path by joining list indices to the name before them
(``decoder.up_blocks.0.resnets.1.conv1.weight`` -> ``decoder/up_blocks_0/resnets_1/conv1/kernel``);
conv kernels go OIHW -> HWIO, linear weights [out, in] -> [in, out], GroupNorm weight -> scale.
Only safetensors are read: pickled ``.bin`` checkpoints can run code when loaded.
"""

import functools
import json
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from mcjax.errors import InputError
from mcjax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig, init_variables

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

# Old (pre-0.14) diffusers attention names -> current ones.
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_OLD_ATTENTION_KEY = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(hf_home) / "hub"


def _snapshot_dirs(repo_id: str) -> list[Path]:
    """Cached snapshots of ``repo_id``, the one ``refs/main`` points to first."""
    repo_dir = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = sorted((repo_dir / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
    main_ref = repo_dir / "refs" / "main"
    if main_ref.is_file():
        main = repo_dir / "snapshots" / main_ref.read_text().strip()
        snapshots = [main] + [s for s in snapshots if s != main]
    return snapshots


def resolve_vae_dir(path_or_repo_id: str | os.PathLike) -> Path:
    """The folder holding the VAE's config.json: ``path`` itself, its ``vae/`` subfolder, or a cached hub snapshot.

    Hub ids (``org/name``) are looked up in the local cache only; nothing is downloaded.
    """
    path = Path(path_or_repo_id)
    candidates = [path, path / "vae"]
    if not path.exists() and str(path_or_repo_id).count("/") == 1:
        candidates = [d for snapshot in _snapshot_dirs(str(path_or_repo_id)) for d in (snapshot / "vae", snapshot)]
        if not candidates:
            raise FileNotFoundError(
                f"{path_or_repo_id!r} is neither a folder nor a model in the local Hugging Face cache "
                f"({hub_cache_dir()}); download it first, e.g. `huggingface-cli download {path_or_repo_id}`"
            )
    for candidate in candidates:
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise FileNotFoundError(f"no {CONFIG_NAME} found; looked in: {', '.join(str(c) for c in candidates)}")


def diffusers_key(flax_path: tuple[str, ...]) -> str:
    """('decoder', 'up_blocks_0', 'conv1', 'kernel') -> 'decoder.up_blocks.0.conv1.weight'."""
    *modules, leaf = flax_path
    names = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
    return ".".join([*names, "bias" if leaf == "bias" else "weight"])


def _to_flax(array: np.ndarray, key: str, expected_shape: tuple[int, ...]) -> np.ndarray:
    """Torch layout -> Flax layout, checking the shape; 1x1-conv attention weights are squeezed to linear."""
    if len(expected_shape) == 2 and array.ndim == 4 and array.shape[2:] == (1, 1):
        array = array[:, :, 0, 0]
    torch_shape = _torch_shape(expected_shape)
    if array.shape != torch_shape:
        raise InputError(f"shape mismatch for {key}: checkpoint has {array.shape}, the model expects {torch_shape}")
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array.T if array.ndim == 2 else array


def _to_torch(array: np.ndarray) -> np.ndarray:
    """Flax layout -> torch layout (HWIO -> OIHW, [in, out] -> [out, in])."""
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array.T if array.ndim == 2 else array


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch-layout shape of a Flax parameter shape."""
    return _to_torch(np.empty(flax_shape, np.bool_)).shape


def _rename_old_attention(state_dict: dict) -> dict:
    """Maps ``attentions.N.query/key/value/proj_attn`` keys to ``to_q/to_k/to_v/to_out.0``."""

    def rename(key):
        m = _OLD_ATTENTION_KEY.match(key)
        return f"{m[1]}.{_OLD_ATTENTION_NAMES[m[2]]}.{m[3]}" if m else key

    return {rename(k): v for k, v in state_dict.items()}


def params_from_state_dict(module: AutoencoderKL, state_dict: dict) -> dict:
    """Flax ``params`` of ``module`` from a diffusers state dict of numpy arrays; strict on keys and shapes."""
    state_dict = _rename_old_attention(state_dict)
    shapes = jax.eval_shape(functools.partial(init_variables, module), jax.random.key(0))["params"]
    expected = {diffusers_key(p): (p, s.shape) for p, s in traverse_util.flatten_dict(shapes).items()}
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise InputError(f"checkpoint does not match the config: missing keys {missing}, unexpected keys {unexpected}")
    flat = {
        path: jnp.asarray(_to_flax(np.asarray(state_dict[key], np.float32), key, shape))
        for key, (path, shape) in expected.items()
    }
    return traverse_util.unflatten_dict(flat)


def state_dict_from_params(params: dict) -> dict[str, np.ndarray]:
    """Diffusers state dict (float32 numpy, torch layout, current attention names) of Flax ``params``."""
    flat = traverse_util.flatten_dict(jax.device_get(params))
    return {diffusers_key(p): np.ascontiguousarray(_to_torch(np.asarray(v, np.float32))) for p, v in flat.items()}


def from_pretrained(path_or_repo_id, dtype=jnp.float32, variant: str | None = None):
    """(module, variables) from a diffusers VAE folder, a pipeline folder (uses ``vae/``) or a cached hub id.

    ``variant`` picks ``diffusion_pytorch_model.<variant>.safetensors`` (e.g. "fp16"); weights are
    always stored as float32 parameters, ``dtype`` only sets the compute dtype.
    """
    vae_dir = resolve_vae_dir(path_or_repo_id)
    config = AutoencoderKLConfig.from_diffusers_config(json.loads((vae_dir / CONFIG_NAME).read_text()))
    weights = vae_dir / (
        WEIGHTS_NAME if variant is None else WEIGHTS_NAME.replace(".safetensors", f".{variant}.safetensors")
    )
    if not weights.is_file():
        pickled = sorted(p.name for p in vae_dir.glob("*.bin"))
        hint = f"; found only pickled {pickled}, convert them to safetensors first" if pickled else ""
        raise FileNotFoundError(f"no {weights.name} in {vae_dir}{hint}")
    module = AutoencoderKL(config, dtype=dtype)
    return module, {"params": params_from_state_dict(module, load_file(weights))}


def save_pretrained(module_or_config: AutoencoderKL | AutoencoderKLConfig, variables, path) -> Path:
    """Writes config.json + diffusion_pytorch_model.safetensors that diffusers' ``AutoencoderKL`` loads."""
    config = module_or_config.config if isinstance(module_or_config, AutoencoderKL) else module_or_config
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_NAME).write_text(json.dumps(config.to_diffusers_config(), indent=2) + "\n")
    save_file(state_dict_from_params(variables["params"]), path / WEIGHTS_NAME, metadata={"format": "pt"})
    return path
