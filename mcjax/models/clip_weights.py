"""CLIP image-tower weights from the files users have: Hugging Face CLIP folders and open_clip checkpoints.

Scope: ViT towers with a class token and learned position embeddings (every OpenAI CLIP, the HF ``openai/clip-vit-*``
and ``laion/CLIP-ViT-*`` models, open_clip's standard ``ViT-*`` configs, layer scale included). Not read: ResNet
(``RN50``) and timm-trunk towers, attentional pooling, average pooling, SigLIP, TorchScript archives. Shapes give
width, depth, patch and image size; the activation and the head count are not in the weights, so they come from the
HF ``config.json``, from open_clip's ``open_clip_config.json`` or model name, or from the caller.
"""

import json
import re
from pathlib import Path

import numpy as np

from mcjax.errors import InputError
from mcjax.models.weight_files import read_state_dict

HF_FILES = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# open_clip's head_width by tower width where it is not 64 (open_clip 3.3's model_configs): ViT-H, -g, -bigG, -e.
_OPEN_CLIP_HEAD_WIDTH = {1280: 80, 1408: 88, 1664: 104, 1792: 112}


def resolve_clip_files(path) -> tuple[Path, dict | None, dict | None]:
    """(weights file, HF config.json or None, open_clip_config.json or None) for a folder or a weights file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"CLIP weights {str(path)!r} do not exist")
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = [folder / name for name in HF_FILES + OPEN_CLIP_FILES if (folder / name).is_file()]
        if not found:
            raise InputError(
                f"CLIP folder {str(path)!r} holds none of {', '.join(HF_FILES + OPEN_CLIP_FILES)}; pass the weights "
                "file itself or a Hugging Face / open_clip model folder"
            )
        path = found[0]
    hf = folder / "config.json"
    oc = folder / "open_clip_config.json"
    return path, _read_json(hf) if hf.is_file() else None, _read_json(oc) if oc.is_file() else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {str(path)!r} as JSON: {e}") from e


def read_clip_checkpoint(path, quick_gelu: bool | None = None, model_name: str | None = None, heads=None):
    """(CLIPVisionConfig fields, Flax params) of the image tower in a HF or open_clip checkpoint."""
    weights, hf_config, oc_config = resolve_clip_files(path)
    state = read_state_dict(weights, "CLIP")
    try:
        if "vision_model.embeddings.patch_embedding.weight" in state:
            return _from_hugging_face(state, weights, hf_config, quick_gelu, heads)
        if "visual.conv1.weight" in state:
            return _from_open_clip(state, weights, oc_config, quick_gelu, model_name, heads)
    except KeyError as e:
        raise InputError(f"CLIP checkpoint {str(weights)!r} lacks the image-tower weight {e.args[0]!r}") from e
    if any(k.startswith(("visual.trunk.", "visual.layer1.")) for k in state):
        raise InputError(f"CLIP checkpoint {str(weights)!r} has a ResNet or timm image tower; only ViT towers are read")
    raise InputError(
        f"{str(weights)!r} is not a CLIP checkpoint mcjax reads: expected vision_model.* and visual_projection.weight "
        f"(Hugging Face) or visual.* (open_clip) keys, found e.g. {sorted(state)[:5]}"
    )


def _linear(state, key):
    return {"kernel": state[key + ".weight"].T, "bias": state[key + ".bias"]}


def _norm(state, key):
    return {"scale": state[key + ".weight"], "bias": state[key + ".bias"]}


def _patch_kernel(w_DxCxPxP):
    return np.ascontiguousarray(w_DxCxPxP.transpose(2, 3, 1, 0))


def _num_layers(state, pattern: str) -> int:
    indices = {int(m[1]) for k in state if (m := re.match(pattern, k))}
    if indices != set(range(len(indices))) or not indices:
        raise InputError(f"CLIP checkpoint has transformer blocks {sorted(indices)}; expected 0 ... n-1")
    return len(indices)


def _check_all_read(state, prefixes, used, weights):
    """Unread tower keys mean a variant this loader does not model; refuse rather than compute something else."""
    left = sorted(k for k in state if k.startswith(prefixes) and k not in used and not k.endswith("position_ids"))
    if left:
        raise InputError(f"CLIP checkpoint {str(weights)!r} has image-tower weights mcjax does not model: {left[:8]}")


def _shape_fields(patch_w, pos_TxD, proj_shape_in_out, mlp_dim, layers):
    width, _, patch, _ = patch_w.shape
    grid = int(round((pos_TxD.shape[0] - 1) ** 0.5))
    if grid * grid + 1 != pos_TxD.shape[0]:
        raise InputError(
            f"CLIP position embedding of {pos_TxD.shape[0]} tokens is not a square grid plus a class token"
        )
    return {
        "image_size": grid * patch,
        "patch_size": patch,
        "width": width,
        "layers": layers,
        "mlp_dim": mlp_dim,
        "embed_dim": proj_shape_in_out[1],
    }


def _from_hugging_face(state, weights, config, quick_gelu, heads):
    if config is None:
        raise InputError(f"Hugging Face CLIP weights {str(weights)!r} need the config.json saved beside them")
    if "visual_projection.weight" not in state:
        raise InputError(
            f"{str(weights)!r} has no visual_projection.weight (a CLIPVisionModel without projection); use the "
            "CLIPModel or CLIPVisionModelWithProjection checkpoint"
        )
    vision = config.get("vision_config") or config.get("vision_config_dict") or config  # CLIPModel or tower
    act = vision.get("hidden_act", "quick_gelu") if quick_gelu is None else ("quick_gelu" if quick_gelu else "gelu")
    v = "vision_model."
    layers = _num_layers(state, r"vision_model\.encoder\.layers\.(\d+)\.")
    params = {
        "patch_embed": {"kernel": _patch_kernel(state[v + "embeddings.patch_embedding.weight"])},
        "class_embedding": state[v + "embeddings.class_embedding"],
        "position_embedding": state[v + "embeddings.position_embedding.weight"],
        "ln_pre": _norm(state, v + "pre_layrnorm"),
        "ln_post": _norm(state, v + "post_layernorm"),
        "proj": {"kernel": state["visual_projection.weight"].T},
    }
    used = {v + "embeddings.patch_embedding.weight", v + "embeddings.class_embedding", "visual_projection.weight"}
    used |= {v + "embeddings.position_embedding.weight"}
    used |= {f"{v}{n}.{p}" for n in ("pre_layrnorm", "post_layernorm") for p in ("weight", "bias")}
    for i in range(layers):
        b = f"{v}encoder.layers.{i}."
        names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
        block = {
            ours: (_norm if ours.startswith("ln") else _linear)(state, b + theirs) for ours, theirs in names.items()
        }
        attn = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}
        block["attn"] = {ours: _linear(state, f"{b}self_attn.{theirs}") for ours, theirs in attn.items()}
        used |= {f"{b}{t}.{p}" for t in names.values() for p in ("weight", "bias")}
        used |= {f"{b}self_attn.{t}.{p}" for t in attn.values() for p in ("weight", "bias")}
        params[f"block_{i}"] = block
    _check_all_read(state, (v, "visual_projection"), used, weights)
    fields = _shape_fields(
        state[v + "embeddings.patch_embedding.weight"],
        params["position_embedding"],
        params["proj"]["kernel"].shape,
        params["block_0"]["fc1"]["kernel"].shape[1],
        layers,
    )
    fields.update(heads=heads or vision.get("num_attention_heads", 12), act=act)
    fields["ln_eps"] = float(vision.get("layer_norm_eps", 1e-5))
    preprocessor = Path(weights).parent / "preprocessor_config.json"
    if preprocessor.is_file():
        pre = _read_json(preprocessor)
        fields.update({k: tuple(pre[f"image_{k}"]) for k in ("mean", "std") if f"image_{k}" in pre})
    return fields, params


def _open_clip_model_config(model_name: str) -> dict | None:
    """open_clip's own ``model_configs/<name>.json`` when the package is installed (read, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model_configs" / f"{model_name}.json"
    return _read_json(path) if path.is_file() else None


_UNSUPPORTED_VISION_CFG = {
    "attentional_pool": False,
    "pool_type": "tok",
    "no_ln_pre": False,
    "pos_embed_type": "learnable",
    "timm_model_name": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}


def _from_open_clip(state, weights, oc_config, quick_gelu, model_name, heads):
    model_cfg, preprocess_cfg = None, {}
    if oc_config is not None:
        model_cfg, preprocess_cfg = oc_config.get("model_cfg"), oc_config.get("preprocess_cfg", {})
    elif model_name is not None:
        model_cfg = _open_clip_model_config(model_name)
    if quick_gelu is None:
        if model_cfg is not None:
            quick_gelu = bool(model_cfg.get("quick_gelu", False))
        elif model_name is not None:
            quick_gelu = "quickgelu" in model_name.lower()
        else:
            raise InputError(
                f"open_clip checkpoint {str(weights)!r} does not say its activation: pass quick_gelu=True (OpenAI-"
                "trained weights, '-quickgelu' models) or False (most LAION / DataComp weights), a model name, or "
                "keep open_clip_config.json beside it"
            )
    vision_cfg = (model_cfg or {}).get("vision_cfg", {})
    for key, default in _UNSUPPORTED_VISION_CFG.items():
        if vision_cfg.get(key, default) != default:
            raise InputError(f"open_clip vision_cfg {key}={vision_cfg[key]!r} is not supported (only {default!r})")
    width = state["visual.conv1.weight"].shape[0]
    head_width = vision_cfg.get("head_width", _OPEN_CLIP_HEAD_WIDTH.get(width, 64))
    layers = _num_layers(state, r"visual\.transformer\.resblocks\.(\d+)\.")
    if "visual.proj" not in state:
        raise InputError(
            f"open_clip checkpoint {str(weights)!r} has no visual.proj; the tower must end in a projection"
        )
    params = {
        "patch_embed": {"kernel": _patch_kernel(state["visual.conv1.weight"])},
        "class_embedding": state["visual.class_embedding"],
        "position_embedding": state["visual.positional_embedding"],
        "ln_pre": _norm(state, "visual.ln_pre"),
        "ln_post": _norm(state, "visual.ln_post"),
        "proj": {"kernel": state["visual.proj"]},
    }
    used = {"visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.proj"}
    used |= {f"visual.{n}.{p}" for n in ("ln_pre", "ln_post") for p in ("weight", "bias")}
    layer_scale = "visual.transformer.resblocks.0.ls_1.gamma" in state
    for i in range(layers):
        b = f"visual.transformer.resblocks.{i}."
        names = {"ln_1": "ln_1", "ln_2": "ln_2", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj"}
        block = {
            ours: (_norm if ours.startswith("ln") else _linear)(state, b + theirs) for ours, theirs in names.items()
        }
        w_q, w_k, w_v = np.split(state[b + "attn.in_proj_weight"], 3)  # torch MultiheadAttention: q, k, v stacked
        b_q, b_k, b_v = np.split(state[b + "attn.in_proj_bias"], 3)
        block["attn"] = {
            "q": {"kernel": w_q.T, "bias": b_q},
            "k": {"kernel": w_k.T, "bias": b_k},
            "v": {"kernel": w_v.T, "bias": b_v},
            "out": _linear(state, b + "attn.out_proj"),
        }
        used |= {f"{b}{t}.{p}" for t in [*names.values(), "attn.out_proj"] for p in ("weight", "bias")}
        used |= {b + "attn.in_proj_weight", b + "attn.in_proj_bias"}
        if layer_scale:
            block["ls_1"], block["ls_2"] = state[b + "ls_1.gamma"], state[b + "ls_2.gamma"]
            used |= {b + "ls_1.gamma", b + "ls_2.gamma"}
        params[f"block_{i}"] = block
    _check_all_read(state, ("visual.",), used, weights)
    fields = _shape_fields(
        state["visual.conv1.weight"],
        params["position_embedding"],
        params["proj"]["kernel"].shape,
        params["block_0"]["fc1"]["kernel"].shape[1],
        layers,
    )
    norm_eps = (vision_cfg.get("norm_kwargs") or {}).get("eps", 1e-5)
    fields.update(heads=heads or width // head_width, act="quick_gelu" if quick_gelu else "gelu", ln_eps=norm_eps)
    fields["layer_scale"] = layer_scale
    fields.update({k: tuple(preprocess_cfg[k]) for k in ("mean", "std") if k in preprocess_cfg})
    return fields, params
