"""Reading PyTorch weight files (safetensors, or pickled ``.pth`` / ``.pt`` / ``.bin`` state dicts) as numpy.

The evaluation networks (LPIPS, CLIP) ship as PyTorch files; safetensors need no PyTorch, pickles do, and are
read with ``weights_only=True`` so a file cannot run code. Every failure is an ``InputError`` naming the file.
"""

from pathlib import Path

import numpy as np

from mcjax.errors import InputError

TORCH_INSTALL_HINT = "pip install 'mcjax[torch]'"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read_state_dict(path, what: str) -> dict[str, np.ndarray]:
    """{key: float32 array} from a weight file; ``what`` names the file's role in error messages."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} weight file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, what)
    if path.suffix in PICKLE_SUFFIXES:
        return _read_pickle(path, what)
    raise InputError(
        f"{what} weight file {str(path)!r}: unknown format {path.suffix!r}; expected .safetensors or a PyTorch "
        f"state dict ({', '.join(PICKLE_SUFFIXES)})"
    )


def _read_safetensors(path: Path, what: str) -> dict[str, np.ndarray]:
    # The flax framework reads bfloat16 too, which plain numpy cannot.
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="flax") as f:
            return {k: np.asarray(f.get_tensor(k), np.float32) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a damaged file
        raise InputError(f"{what} weight file {str(path)!r} is not a readable safetensors file: {e}") from e


def _read_pickle(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise InputError(
            f"{what} weight file {str(path)!r} is a PyTorch pickle; reading it needs PyTorch ({TORCH_INSTALL_HINT}), "
            "or convert it to .safetensors"
        ) from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(
            f"{what} weight file {str(path)!r} is not a PyTorch state dict (TorchScript archives and pickles of "
            f"whole models are not read; save model.state_dict() instead): {e}"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # training checkpoints wrap it
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{what} weight file {str(path)!r} does not hold a state dict of tensors")
    return {_strip_module(k): v.detach().float().numpy() for k, v in obj.items()}


def _strip_module(key: str) -> str:
    """DistributedDataParallel checkpoints prefix every key with ``module.``."""
    return key[len("module.") :] if key.startswith("module.") else key
