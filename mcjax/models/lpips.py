"""LPIPS v0.1 (Zhang et al. 2018) exactly as the ``lpips`` package computes it, for VGG16 and AlexNet trunks.

``lpips.LPIPS(net=..., version='0.1')(a, b, normalize=True)``: images in [0, 1] -> [-1, 1], the ScalingLayer
(shift / scale), five ReLU outputs of the torchvision trunk, each unit-normalised over channels (eps 1e-10),
squared difference, a 1x1 ``lin`` conv to one channel (dropout is off at evaluation), spatial mean, sum over layers.

Weights come from two files users have: the torchvision trunk (``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``
or the same as .safetensors) and the package's linear layers (``lpips/weights/v0.1/vgg.pth`` / ``alex.pth``).
"""

import functools
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mcjax.errors import InputError
from mcjax.models.weight_files import read_state_dict

NETS = ("vgg", "alex")
# torchvision ``features`` index of each conv, and the index of the ReLU that ends each of lpips' five slices.
_VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_VGG_POOLS = (4, 9, 16, 23)
_VGG_SLICE_ENDS = (3, 8, 15, 22, 29)
_VGG_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
_ALEX_CONVS = {0: (64, 11, 4, 2), 3: (192, 5, 1, 2), 6: (384, 3, 1, 1), 8: (256, 3, 1, 1), 10: (256, 3, 1, 1)}
_ALEX_POOLS = (2, 5)
_ALEX_SLICE_ENDS = (1, 4, 7, 9, 11)
_TORCHVISION_NAME = {"vgg": "vgg16", "alex": "alexnet"}
LPIPS_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_EPS = 1e-10


def _layers(net: str) -> list[tuple[int, str, tuple]]:
    """The trunk as (torchvision index, kind, args) up to the last slice's ReLU."""
    if net == "vgg":
        convs = {i: (c, 3, 1, 1) for i, c in zip(_VGG_CONVS, _VGG_CHANNELS)}
        pools, pool_window, last = _VGG_POOLS, 2, _VGG_SLICE_ENDS[-1]
    else:
        convs, pools, pool_window, last = _ALEX_CONVS, _ALEX_POOLS, 3, _ALEX_SLICE_ENDS[-1]
    layers = []
    for i in range(last + 1):
        if i in convs:
            layers.append((i, "conv", convs[i]))
        elif i in pools:
            layers.append((i, "pool", (pool_window, 2)))
        else:
            layers.append((i, "relu", ()))
    return layers


class LPIPSTrunk(nn.Module):
    """The torchvision ``features`` of VGG16 / AlexNet; returns the five ReLU outputs lpips slices at."""

    net: str = "vgg"  # "vgg" | "alex"

    @nn.compact
    def __call__(self, x_BxHxWx3) -> list[jax.Array]:
        ends = _VGG_SLICE_ENDS if self.net == "vgg" else _ALEX_SLICE_ENDS
        h, outs = x_BxHxWx3, []
        for i, kind, args in _layers(self.net):
            if kind == "conv":
                features, k, stride, pad = args
                h = nn.Conv(features, (k, k), strides=stride, padding=((pad, pad), (pad, pad)), name=f"features_{i}")(h)
            elif kind == "pool":
                window, stride = args
                h = nn.max_pool(h, (window, window), strides=(stride, stride), padding="VALID")
            else:
                h = nn.relu(h)
            if i in ends:
                outs.append(h)
        return outs


class LPIPS(nn.Module):
    """Per-image LPIPS distance of two batches of images in [0, 1]."""

    net: str = "vgg"  # "vgg" | "alex"

    @nn.compact
    def __call__(self, a_BxHxWx3, b_BxHxWx3) -> jax.Array:
        batch = a_BxHxWx3.shape[0]
        x_2BxHxWx3 = jnp.concatenate([a_BxHxWx3, b_BxHxWx3]).astype(jnp.float32) * 2.0 - 1.0
        x_2BxHxWx3 = (x_2BxHxWx3 - _SHIFT) / _SCALE
        d_B = jnp.zeros((batch,), jnp.float32)
        for k, f_2BxhxwxC in enumerate(LPIPSTrunk(self.net, name="net")(x_2BxHxWx3)):
            f_2BxhxwxC = f_2BxhxwxC / (jnp.sqrt(jnp.sum(f_2BxhxwxC**2, axis=-1, keepdims=True)) + _EPS)
            diff_BxhxwxC = (f_2BxhxwxC[:batch] - f_2BxhxwxC[batch:]) ** 2
            lin_Bxhxwx1 = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{k}")(diff_BxhxwxC)
            d_B = d_B + jnp.mean(lin_Bxhxwx1, axis=(1, 2, 3))
        return d_B


def default_lin_path(net: str) -> Path | None:
    """``weights/v0.1/<net>.pth`` inside the installed ``lpips`` package, or None without the package."""
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth"
    return path if path.is_file() else None


def _conv_kernel(w_OxIxKxK: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w_OxIxKxK.transpose(2, 3, 1, 0))


def _trunk_params(net: str, state_dict: dict, path) -> dict:
    """Flax trunk params from torchvision (``features.N.*``) or lpips-module (``net.sliceK.N.*``) keys."""
    by_index = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", key)
        if m:
            by_index[(int(m[1]), m[2])] = value
    params = {}
    for i, kind, args in _layers(net):
        if kind != "conv":
            continue
        if (i, "weight") not in by_index or (i, "bias") not in by_index:
            found = sorted(state_dict)[:6]
            raise InputError(
                f"LPIPS {net} backbone file {str(path)!r} is not a torchvision {_TORCHVISION_NAME[net]} state dict: "
                f"no features.{i}.weight / features.{i}.bias (first keys: {found})"
            )
        features, k = args[0], args[1]
        w, b = by_index[(i, "weight")], by_index[(i, "bias")]
        if w.ndim != 4 or w.shape[0] != features or w.shape[2:] != (k, k) or (i == 0 and w.shape[1] != 3):
            raise InputError(
                f"LPIPS {net} backbone file {str(path)!r}: features.{i}.weight has shape {w.shape}, "
                f"{_TORCHVISION_NAME[net]} expects ({features}, *, {k}, {k}); is it the other network's file?"
            )
        params[f"features_{i}"] = {"kernel": _conv_kernel(w), "bias": b}
    return params


def _lin_params(net: str, state_dict: dict, path) -> dict:
    """Flax lin params from lpips keys ``linK.model.1.weight`` (``model.0`` when saved without dropout)."""
    params = {}
    for k, channels in enumerate(LPIPS_CHANNELS[net]):
        key = next((c for c in (f"lin{k}.model.1.weight", f"lin{k}.model.0.weight") if c in state_dict), None)
        if key is None:
            raise InputError(
                f"LPIPS {net} linear-layer file {str(path)!r} has no lin{k}.model.1.weight; expected the lpips "
                f"package's weights/v0.1/{net}.pth (keys: {sorted(state_dict)[:6]})"
            )
        w = state_dict[key]
        if w.shape != (1, channels, 1, 1):
            raise InputError(
                f"LPIPS {net} linear-layer file {str(path)!r}: {key} has shape {w.shape}, expected "
                f"(1, {channels}, 1, 1); is it the other network's file?"
            )
        params[f"lin{k}"] = {"kernel": _conv_kernel(w)}
    return params


def load_lpips(net: str, backbone_path, lin_path=None) -> tuple[LPIPS, dict]:
    """(module, variables) of LPIPS v0.1 from a torchvision trunk file and the lpips linear-layer file.

    ``lin_path`` defaults to the file inside the installed ``lpips`` package. A whole ``lpips.LPIPS`` state dict
    (keys ``net.sliceK.N.*`` and ``linK.model.1.weight``) works as both files.
    """
    if net not in NETS:
        raise InputError(f"LPIPS net {net!r} is not supported; expected one of {NETS}")
    if lin_path is None:
        lin_path = default_lin_path(net)
        if lin_path is None:
            raise InputError(
                f"no LPIPS linear-layer file given and the lpips package is not installed; pass the package's "
                f"weights/v0.1/{net}.pth (pip install lpips)"
            )
    trunk = _trunk_params(net, read_state_dict(backbone_path, f"LPIPS {net} backbone"), backbone_path)
    params = {"net": trunk, **_lin_params(net, read_state_dict(lin_path, f"LPIPS {net} linear-layer"), lin_path)}
    params = jax.tree.map(jnp.asarray, params)
    return LPIPS(net), {"params": params}


def lpips_distance(module: LPIPS, variables: dict, a_BxHxWx3, b_BxHxWx3) -> jax.Array:
    """[B] LPIPS distances between two batches of images in [0, 1] (channels last)."""
    a_BxHxWx3, b_BxHxWx3 = jnp.asarray(a_BxHxWx3), jnp.asarray(b_BxHxWx3)
    if a_BxHxWx3.shape != b_BxHxWx3.shape or a_BxHxWx3.ndim != 4 or a_BxHxWx3.shape[-1] != 3:
        raise InputError(
            f"LPIPS needs two [B, H, W, 3] batches of one shape, got {a_BxHxWx3.shape} and {b_BxHxWx3.shape}"
        )
    return _jitted_apply(module)(variables, a_BxHxWx3, b_BxHxWx3)


@functools.lru_cache(maxsize=8)
def _jitted_apply(module: nn.Module):
    """One jitted apply per module (Linen modules are hashable dataclasses), so repeated calls do not retrace."""
    return jax.jit(module.apply)
