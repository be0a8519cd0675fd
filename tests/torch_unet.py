"""A PyTorch twin of ``mcjax.models.unet.ConditionalUNet``: same architecture, same maths, loadable Flax weights.

The benchmark (``unet_throughput.py``) compares the frameworks, not the models, so every layer here computes what its
Flax counterpart computes: GroupNorm with gcd(32, C) groups and ε = 1e-6 in float32, flax's 'SAME' padding (for a 3×3
stride-2 convolution on an even size that is (0, 1), not PyTorch's symmetric (1, 1)), nearest upsampling + convolution,
flax's multi-head attention (q/k/v projections with bias, 1/sqrt(head_dim) scaling, dropout broadcast over batch and
heads), and batch norm whose running variance tracks the biased batch variance (flax) rather than the unbiased one.

Submodules carry the Flax names (``ResBlock_3``, ``down_condition_1``, ``Conv_2`` …), so ``load_flax_params`` is a
walk over both trees. The network takes NCHW tensors; ``model.to(memory_format=torch.channels_last)`` with
channels-last inputs runs it in the NHWC layout of mcjax. The parts the Flax model keeps in float32 whatever its
compute dtype (condition embedding, time MLP, condition injection, normalisation statistics) also run outside
autocast here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "selu": F.selu, "silu": F.silu, "gelu": lambda x: F.gelu(x, approximate="tanh"),
               "tanh": torch.tanh}  # flax's nn.gelu is the tanh approximation by default
_PLACEHOLDER = {"indicator": 0.0, "paper": -1.0, "reference": 0.0}


def timestep_embedding(t_B: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[B, dim]: cos and sin of t at geometric frequencies, as ``mcjax.models.unet.timestep_embedding``."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t_B.device) / half)
    angles = t_B.float()[:, None] * frequencies[None]
    return F.pad(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1), (0, dim - 2 * half))


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ConditionEmbedding(nn.Module):
    """e_y: an embedding table per categorical condition (row 0 = missing) and a linear layer per numerical one."""

    def __init__(self, num_categories, num_numerical: int, embedding_dim: int, numerical_missing: str):
        super().__init__()
        self.indicator = numerical_missing == "indicator"
        self.placeholder = _PLACEHOLDER[numerical_missing]
        self.tables = nn.ModuleList(nn.Embedding(n + 1, embedding_dim) for n in num_categories)
        self.numerical = nn.ModuleList(nn.Linear(2 if self.indicator else 1, embedding_dim)
                                       for _ in range(num_numerical))

    def forward(self, cat_BxK: torch.Tensor, num_BxJ: torch.Tensor) -> torch.Tensor:
        parts = [table(cat_BxK[:, i]) for i, table in enumerate(self.tables)]
        missing = torch.isnan(num_BxJ)
        value = torch.where(missing, torch.full_like(num_BxJ, self.placeholder), num_BxJ)
        for j, layer in enumerate(self.numerical):
            x = torch.stack([value[:, j], missing[:, j].float()], -1) if self.indicator else value[:, j:j + 1]
            parts.append(layer(x))
        return torch.cat(parts, -1)

    def load_flax(self, params, stats):
        for i, table in enumerate(self.tables):
            _copy(table.weight, params[f"categorical_{i}"])
        for j, layer in enumerate(self.numerical):
            load_flax_params(layer, params[f"numerical_{j}"])
        _check_keys(self, params, {f"categorical_{i}" for i in range(len(self.tables))}
                    | {f"numerical_{j}" for j in range(len(self.numerical))})


class FlaxBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` that updates its running variance with the biased batch variance, as flax's BatchNorm does
    (flax momentum 0.9 is PyTorch momentum 0.1)."""

    def forward(self, x_BxF: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x_BxF)
        mean = x_BxF.mean(0)
        var = x_BxF.var(0, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var, self.momentum)
        return (x_BxF - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class ConditionInjection(nn.Module):
    """e_y → linear → batch norm → broadcast over the feature map → concatenated to it (in float32, as in Flax)."""

    def __init__(self, condition_dim: int, features: int):
        super().__init__()
        self.Dense_0 = nn.Linear(condition_dim, features)
        self.BatchNorm_0 = FlaxBatchNorm1d(features, eps=1e-5, momentum=0.1)

    def forward(self, h_BxCxHxW: torch.Tensor, e_y_BxE: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h_BxCxHxW.device.type, enabled=False):
            c_BxF = self.BatchNorm_0(self.Dense_0(e_y_BxE.float()))
        b, _, height, width = h_BxCxHxW.shape
        c = c_BxF.to(h_BxCxHxW.dtype)[:, :, None, None].expand(b, -1, height, width)
        return torch.cat([h_BxCxHxW, c], dim=1)


class ResBlock(nn.Module):
    """GroupNorm → act → 3×3 conv, plus the time embedding, → GroupNorm → act → dropout → 3×3 conv, residual.

    ``groups(C)`` counts GroupNorm's groups; ``activate_time=False`` adds the time embedding without the activation
    (the authors' layout)."""

    def __init__(self, in_channels: int, channels: int, temb_dim: int, activation: str, dropout: float,
                 groups=lambda c: math.gcd(32, c), activate_time: bool = True):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.dropout, self.activate_time = dropout, activate_time
        self.GroupNorm_0 = nn.GroupNorm(groups(in_channels), in_channels, eps=1e-6)
        self.Conv_0 = conv3x3(in_channels, channels)
        self.Dense_0 = nn.Linear(temb_dim, channels)
        self.GroupNorm_1 = nn.GroupNorm(groups(channels), channels, eps=1e-6)
        self.Conv_1 = conv3x3(channels, channels)
        self.Conv_2 = nn.Conv2d(in_channels, channels, 1) if in_channels != channels else None  # the skip

    def forward(self, h_BxCxHxW: torch.Tensor, temb_BxT: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(h_BxCxHxW)))
        h = h + self.Dense_0(self.act(temb_BxT) if self.activate_time else temb_BxT)[:, :, None, None]
        h = F.dropout(self.act(self.GroupNorm_1(h)), self.dropout, self.training)
        h = self.Conv_1(h)
        skip = h_BxCxHxW if self.Conv_2 is None else self.Conv_2(h_BxCxHxW)
        return skip + h


class MultiHeadDotProductAttention(nn.Module):
    """flax's ``MultiHeadDotProductAttention`` (self-attention): q/k/v projected in one product of the stacked
    kernels, softmax(q kᵀ / sqrt(head_dim)) v per head, dropout on the weights broadcast over batch and heads."""

    def __init__(self, channels: int, num_heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.qkv = nn.Linear(channels, 3 * num_heads * head_dim)
        self.out = nn.Linear(num_heads * head_dim, channels)

    def forward(self, tokens_BxNxC: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens_BxNxC.shape
        q, k, v = self.qkv(tokens_BxNxC).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.training and self.dropout > 0:
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
            keep_NxN = torch.rand(n, n, device=weights.device) >= self.dropout
            o = (weights * keep_NxN.to(weights.dtype) / (1.0 - self.dropout)) @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(head_dim)
        return self.out(o.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

    def load_flax(self, params, stats):
        """DenseGeneral kernels [C, heads, head_dim] (q, k, v) and [heads, head_dim, C] (out)."""
        qkv = [np.asarray(params[name]["kernel"]).reshape(params[name]["kernel"].shape[0], -1).T
               for name in ("query", "key", "value")]
        _copy(self.qkv.weight, np.concatenate(qkv, axis=0))
        _copy(self.qkv.bias, np.concatenate([np.asarray(params[n]["bias"]).reshape(-1)
                                             for n in ("query", "key", "value")]))
        kernel = np.asarray(params["out"]["kernel"])
        _copy(self.out.weight, kernel.reshape(-1, kernel.shape[-1]).T)
        _copy(self.out.bias, params["out"]["bias"])
        _check_keys(self, params, {"query", "key", "value", "out"})


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H×W positions, residual."""

    def __init__(self, channels: int, num_heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.MultiHeadDotProductAttention_0 = MultiHeadDotProductAttention(channels, num_heads, head_dim, dropout)

    def forward(self, h_BxCxHxW: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h_BxCxHxW.shape
        tokens_BxNxC = self.GroupNorm_0(h_BxCxHxW).flatten(2).transpose(1, 2)  # a view when channels-last
        attended = self.MultiHeadDotProductAttention_0(tokens_BxNxC)
        return h_BxCxHxW + attended.transpose(1, 2).reshape(b, c, height, width)


class Downsample(nn.Conv2d):
    """3×3 stride-2 convolution with flax's 'SAME' padding: (0, 1) on even sizes, i.e. only at the bottom/right."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, stride=2)

    def forward(self, h_BxCxHxW: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(h_BxCxHxW, (0, 1, 0, 1)))


class Upsample(nn.Conv2d):
    """Nearest-neighbour ×2 upsampling, then a 3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, padding=1)

    def forward(self, h_BxCxHxW: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(h_BxCxHxW, scale_factor=2, mode="nearest"))


class ConditionedUNet(nn.Module):
    """What both twins share: the unconditional input, and e_y and the time embedding computed outside autocast
    (float32, as the Flax models keep them). Subclasses define ``ConditionEmbedding_0`` and ``time_embedding``."""

    def all_missing(self, batch_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        return all_missing(self.num_categories, self.num_numerical, batch_size, device)

    def embed_inputs(self, x_BxCxHxW, t_B, cat_BxK=None, num_BxJ=None):
        """(e_y, time embedding); no conditions is every condition masked."""
        if cat_BxK is None:
            cat_BxK, num_BxJ = self.all_missing(x_BxCxHxW.shape[0], x_BxCxHxW.device)
        with torch.autocast(x_BxCxHxW.device.type, enabled=False):
            return self.ConditionEmbedding_0(cat_BxK, num_BxJ), self.time_embedding(t_B)


class ConditionalUNet(ConditionedUNet):
    """ε-prediction U-Net ``(x_t [B, C, H, W], t [B], cat [B, K] | None, num [B, J] | None) → ε̂ [B, C, H, W]``.

    The arguments are the fields of ``mcjax.models.unet.ConditionalUNet`` (plus the input channel count, which Flax
    infers); ``model.train()`` is Flax's ``train=True`` (dropout, batch statistics). Submodules are created in the
    order the Flax module creates them, so they carry the same automatic names.
    """

    def __init__(self, num_categories, num_numerical: int, in_channels: int = 4, out_channels: int = 4,
                 base_channels: int = 64, channel_multipliers=(1, 2, 4, 4), blocks_per_level: int = 2,
                 attention_levels=(1, 2, 3), num_heads: int = 8, head_dim: int = 64, dropout: float = 0.05,
                 activation: str = "selu", time_embedding_dim: int = 128, condition_embedding_dim: int = 10,
                 condition_channels: int = 32, numerical_missing: str = "indicator"):
        super().__init__()
        self.num_categories, self.num_numerical = tuple(num_categories), num_numerical
        self.time_embedding_dim = time_embedding_dim
        self.act = ACTIVATIONS[activation]
        self._counts: dict[str, int] = {}
        temb_dim, levels = 4 * time_embedding_dim, len(channel_multipliers)
        self.ConditionEmbedding_0 = ConditionEmbedding(num_categories, num_numerical, condition_embedding_dim,
                                                       numerical_missing)
        e_dim = condition_embedding_dim * (len(num_categories) + num_numerical)
        self.time_mlp = [self._add("Dense", nn.Linear(time_embedding_dim, temb_dim)),
                         self._add("Dense", nn.Linear(temb_dim, temb_dim))]

        def blocks(c_in, c_out, level):
            res = self._add("ResBlock", ResBlock(c_in, c_out, temb_dim, activation, dropout))
            attn = (self._add("SelfAttention", SelfAttention(c_out, num_heads, head_dim, dropout))
                    if level in attention_levels else None)
            return res, attn

        stem = self._add("Conv", conv3x3(in_channels, base_channels))
        c, skips = base_channels, [base_channels]
        self.down = []  # per level: (injection, [(ResBlock, SelfAttention | None)], Downsample | None)
        for level, multiplier in enumerate(channel_multipliers):
            injection = self._add(f"down_condition_{level}", ConditionInjection(e_dim, condition_channels), False)
            c += condition_channels
            level_blocks = []
            for _ in range(blocks_per_level):
                level_blocks.append(blocks(c, base_channels * multiplier, level))
                c = base_channels * multiplier
                skips.append(c)
            down = self._add("Conv", Downsample(c)) if level < levels - 1 else None
            if down is not None:
                skips.append(c)
            self.down.append((injection, level_blocks, down))
        mid = base_channels * channel_multipliers[-1]
        self.middle = (self._add("ResBlock", ResBlock(c, mid, temb_dim, activation, dropout)),
                       self._add("SelfAttention", SelfAttention(mid, num_heads, head_dim, dropout)),
                       self._add("ResBlock", ResBlock(mid, mid, temb_dim, activation, dropout)))
        c = mid
        self.up = []  # per level, from the deepest: (injection, [(ResBlock, SelfAttention | None)], Upsample | None)
        for level in reversed(range(levels)):
            injection = self._add(f"up_condition_{level}", ConditionInjection(e_dim, condition_channels), False)
            c += condition_channels
            level_blocks = []
            for _ in range(blocks_per_level + 1):
                level_blocks.append(blocks(c + skips.pop(), base_channels * channel_multipliers[level], level))
                c = base_channels * channel_multipliers[level]
            self.up.append((injection, level_blocks, self._add("Conv", Upsample(c)) if level > 0 else None))
        # Plain tuples and lists of the registered modules: an attribute would register them a second time.
        self.ends = (stem, self._add("GroupNorm", group_norm(c)), self._add("Conv", conv3x3(c, out_channels)))

    def _add(self, kind: str, module: nn.Module, numbered: bool = True) -> nn.Module:
        """Registers ``module`` under flax's automatic name ``{kind}_{count}`` (or ``kind`` itself)."""
        name = kind
        if numbered:
            name = f"{kind}_{self._counts.get(kind, 0)}"
            self._counts[kind] = self._counts.get(kind, 0) + 1
        self.add_module(name, module)
        return module

    def time_embedding(self, t_B: torch.Tensor) -> torch.Tensor:
        return self.time_mlp[1](self.act(self.time_mlp[0](timestep_embedding(t_B, self.time_embedding_dim))))

    def forward(self, x_BxCxHxW, t_B, cat_BxK=None, num_BxJ=None):
        e_y, temb = self.embed_inputs(x_BxCxHxW, t_B, cat_BxK, num_BxJ)

        def blocks(h, res, attn):
            h = res(h, temb)
            return attn(h) if attn is not None else h

        stem, head_norm, head = self.ends
        h = stem(x_BxCxHxW)
        skips = [h]
        for injection, level_blocks, down in self.down:
            h = injection(h, e_y)
            for res, attn in level_blocks:
                h = blocks(h, res, attn)
                skips.append(h)
            if down is not None:
                h = down(h)
                skips.append(h)
        res_a, attn, res_b = self.middle
        h = res_b(attn(res_a(h, temb)), temb)
        for injection, level_blocks, up in self.up:
            h = injection(h, e_y)
            for res, attn in level_blocks:
                h = blocks(torch.cat([h, skips.pop()], dim=1), res, attn)
            if up is not None:
                h = up(h)
        return head(self.act(head_norm(h))).float()


def all_missing(num_categories, num_numerical: int, batch_size: int, device=None):
    """(cat [B, K], num [B, J]) with every condition masked: the unconditional input."""
    return (torch.zeros(batch_size, len(num_categories), dtype=torch.long, device=device),
            torch.full((batch_size, num_numerical), float("nan"), device=device))


def _copy(target: torch.Tensor, value) -> None:
    value = torch.from_numpy(np.array(value, dtype=np.float32))
    if value.shape != target.shape:
        raise ValueError(f"Shape mismatch: Flax {tuple(value.shape)} vs PyTorch {tuple(target.shape)}.")
    target.copy_(value)


def _check_keys(module: nn.Module, params, expected: set) -> None:
    if set(params) != expected:
        raise ValueError(f"{type(module).__name__}: Flax has {sorted(params)}, PyTorch expects {sorted(expected)}.")


@torch.no_grad()
def load_flax_params(torch_model: nn.Module, params, batch_stats=None) -> None:
    """Copies a Flax ``params`` pytree (and ``batch_stats``) of ``mcjax``'s ConditionalUNet into the twin, in place.

    Convolution kernels HWIO → OIHW, Dense kernels [in, out] → [out, in], attention kernels [C, heads, head_dim] →
    [heads·head_dim, C]; batch norm running statistics from ``batch_stats``. Raises when the trees do not match.
    """
    stats = {} if batch_stats is None else batch_stats
    if hasattr(torch_model, "load_flax"):
        torch_model.load_flax(params, stats)
    elif isinstance(torch_model, nn.Conv2d):
        _copy(torch_model.weight, np.transpose(np.asarray(params["kernel"]), (3, 2, 0, 1)))
        _copy(torch_model.bias, params["bias"])
        _check_keys(torch_model, params, {"kernel", "bias"})
    elif isinstance(torch_model, nn.Linear):
        _copy(torch_model.weight, np.asarray(params["kernel"]).T)
        _copy(torch_model.bias, params["bias"])
        _check_keys(torch_model, params, {"kernel", "bias"})
    elif isinstance(torch_model, nn.GroupNorm):
        _copy(torch_model.weight, params["scale"])
        _copy(torch_model.bias, params["bias"])
        _check_keys(torch_model, params, {"scale", "bias"})
    elif isinstance(torch_model, nn.BatchNorm1d):
        _copy(torch_model.weight, params["scale"])
        _copy(torch_model.bias, params["bias"])
        _copy(torch_model.running_mean, stats["mean"])
        _copy(torch_model.running_var, stats["var"])
        _check_keys(torch_model, params, {"scale", "bias"})
    else:
        children = dict(torch_model.named_children())
        _check_keys(torch_model, params, set(children))
        for name, child in children.items():
            load_flax_params(child, params[name], stats.get(name))


def random_variables(model, *inputs):
    """Random Flax variables of ``model`` (applied to ``inputs``) at about the scale of its initialisation, batch
    statistics far from (0, 1).

    Drawn with numpy, not ``model.init``: every bias, scale and zero-initialised kernel must be non-trivial, or an
    error there would not show, and numpy is much faster than per-leaf JAX draws.
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)

    def draw(path, leaf):
        names = [getattr(k, "key", "") for k in path]
        if names[-1] == "kernel":  # DenseGeneral q/k/v kernels are [C, heads, head_dim]: fan-in C
            fan_in = leaf.shape[0] if names[-2] in ("query", "key", "value") else np.prod(leaf.shape[:-1])
            return rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape)
        if names[-1] in ("scale", "var"):
            return rng.uniform(0.5, 1.5, leaf.shape)
        return rng.normal(0, 0.3 if names[-1] in ("bias", "mean") else 1.0, leaf.shape)

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))
    return jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(draw(p, s), jnp.float32), shapes)


def count_parameters(torch_model: nn.Module) -> int:
    return sum(p.numel() for p in torch_model.parameters())


def mask_conditions(cat_BxK: torch.Tensor, num_BxJ: torch.Tensor, p: float, generator=None):
    """Each condition independently dropped with probability p (categorical → 0, numerical → NaN)."""
    drop_cat = torch.rand(cat_BxK.shape, device=cat_BxK.device, generator=generator) < p
    drop_num = torch.rand(num_BxJ.shape, device=num_BxJ.device, generator=generator) < p
    return cat_BxK.masked_fill(drop_cat, 0), num_BxJ.masked_fill(drop_num, float("nan"))


class TrainState:
    """What ``mcjax.train.ldm.LDMState`` holds: the model (parameters + batch statistics), AdamW and the EMA."""

    def __init__(self, model: ConditionalUNet, learning_rate: float, weight_decay: float = 1e-4,
                 ema_decay: float = 0.9999):
        self.model = model
        # optax.adamw defaults: b1 0.9, b2 0.999, eps 1e-8; decoupled decay lr · wd · w as in torch's AdamW.
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=weight_decay, foreach=True)
        self.ema = [p.detach().clone() for p in model.parameters()]
        self.ema_decay = ema_decay
        self.step = 0


def train_step(state: TrainState, x0_NxCxHxW, cat_NxK, num_NxJ, alphas_cumprod_T, batch_size: int, p: float,
               autocast_dtype=None):
    """One step of ``mcjax.train.ldm.train_step``: draw batch rows, mask conditions at sparsity p, noise at uniform
    timesteps, ε-MSE, AdamW, EMA update. Returns (loss, grad norm) as tensors, so nothing waits for the device."""
    device = x0_NxCxHxW.device
    model = state.model.train()
    rows = torch.randint(0, x0_NxCxHxW.shape[0], (batch_size,), device=device)
    x0, cat, num = x0_NxCxHxW[rows], cat_NxK[rows], num_NxJ[rows]
    cat, num = mask_conditions(cat, num, p)
    t_B = torch.randint(0, alphas_cumprod_T.shape[0], (batch_size,), device=device)
    noise = torch.randn_like(x0)
    abar = alphas_cumprod_T[t_B][:, None, None, None]
    x_t = torch.sqrt(abar) * x0 + torch.sqrt(1.0 - abar) * noise
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        eps = model(x_t, t_B, cat, num)
    loss = torch.mean(torch.square(eps.float() - noise))
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = list(model.parameters())
    grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))
    state.optimizer.step()
    with torch.no_grad():
        torch._foreach_lerp_(state.ema, params, 1.0 - state.ema_decay)
    state.step += 1
    return loss.detach(), grad_norm


def ddim_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """The trailing spacing of ``mcjax.diffusion.ddim_timesteps``: T-1 downwards in ``num_steps`` even steps."""
    return [num_timesteps - 1 - i * num_timesteps // num_steps for i in range(num_steps)]


@torch.no_grad()
def ddim_sample(model: ConditionalUNet, alphas_cumprod_T: torch.Tensor, x_T, cat_BxK, num_BxJ, num_steps: int = 50,
                eta: float = 0.0, guidance_scale: float = 1.0, autocast_dtype=None, generator=None):
    """``mcjax.diffusion.ddim_sample`` from the given x_T: DDIM eq. 12 on trailing timesteps, classifier-free
    guidance as one pass over the conditional and unconditional halves when guidance_scale != 1."""
    model = model.eval()
    batch, device = x_T.shape[0], x_T.device
    timesteps = ddim_timesteps(alphas_cumprod_T.shape[0], num_steps)
    abar = [float(alphas_cumprod_T[t]) for t in timesteps]
    abar_prev = abar[1:] + [1.0]
    if guidance_scale != 1:
        uncond = model.all_missing(batch, device)
        cat_BxK, num_BxJ = torch.cat([cat_BxK, uncond[0]]), torch.cat([num_BxJ, uncond[1]])
    x = x_T
    for t, a, a_prev in zip(timesteps, abar, abar_prev):
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            if guidance_scale == 1:
                eps = model(x, torch.full((batch,), t, device=device), cat_BxK, num_BxJ)
            else:
                eps_cond, eps_uncond = model(torch.cat([x, x]), torch.full((2 * batch,), t, device=device),
                                             cat_BxK, num_BxJ).chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        x0_hat = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
        sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
        x = math.sqrt(a_prev) * x0_hat + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, device=device, generator=generator)
    return x
