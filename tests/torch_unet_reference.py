"""A PyTorch twin of ``mcjax.models.unet_reference.ReferenceUNet``, the authors' U-Net layout, loadable from Flax.

Built from the structure the module docstring of ``mcjax.models.unet_reference`` lists (NCHW, PyTorch's symmetric
padding for the strided convolutions, attention over the channel-major q/k/v reshaped without a transpose), with the
Flax submodule names, so ``tests.torch_unet.load_flax_params`` walks both trees. It has the interface of
``tests.torch_unet.ConditionalUNet`` (``forward(x, t, cat, num)``, ``all_missing``), so that module's
``train_step`` and ``ddim_sample`` run it too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcjax.models.unet_reference import authors_group_count
from tests.torch_unet import ConditionedUNet, ConditionEmbedding, ConditionInjection, ResBlock, Upsample, conv3x3


def sinusoidal_features(t_B: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, dim]: sin at even and cos at odd positions, frequencies 10000^(-2i/dim)."""
    frequencies = 10_000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=t_B.device) / dim)
    angles = t_B.float()[:, None] * frequencies[None]
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)


class ChannelMajorAttention(nn.Module):
    def __init__(self, channels: int, num_heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.GroupNorm_0 = nn.GroupNorm(authors_group_count(channels), channels, eps=1e-5)
        self.qkv = nn.Linear(channels, 3 * num_heads * head_dim)  # a 1×1 convolution over positions
        self.proj_out = nn.Linear(num_heads * head_dim, channels)

    def forward(self, x_BxCxHxW: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x_BxCxHxW.shape
        x = x_BxCxHxW.reshape(b, c, -1)
        qkv = self.qkv(self.GroupNorm_0(x).transpose(1, 2)).transpose(1, 2)  # [B, 3·heads·d, N], channel-major
        q, k, v = qkv.reshape(b, self.num_heads, height * width, -1).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        h = self.proj_out(h.reshape(b, self.num_heads * self.head_dim, -1).transpose(1, 2)).transpose(1, 2)
        return (x + h).reshape(b, c, height, width)


class Level(nn.Module):
    def __init__(self, in_channels: int, channels: int, e_dim: int, temb_dim: int, blocks: int, attention: bool,
                 down: bool, condition_channels: int, num_heads: int, head_dim: int, dropout: float, activation: str):
        super().__init__()
        self.condition = ConditionInjection(e_dim, condition_channels)
        self.blocks = blocks
        for i in range(blocks):
            self.add_module(f"res_{i}", ResBlock(in_channels + condition_channels if i == 0 else channels, channels,
                                                 temb_dim, activation, dropout, authors_group_count, False))
        self.attention = ChannelMajorAttention(channels, num_heads, head_dim, dropout) if attention else None
        if down:
            self.downsample = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1)
        else:
            self.Conv_0 = Upsample(channels)
        self.down = down

    def forward(self, h, e_y, temb):
        h = self.condition(h, e_y)
        for i in range(self.blocks):
            h = self.get_submodule(f"res_{i}")(h, temb)
        if self.attention is not None:
            h = self.attention(h)
        return (self.downsample(h), h) if self.down else self.Conv_0(h)


class ReferenceUNet(ConditionedUNet):
    """ε-prediction U-Net ``(x_t [B, C, H, W], t [B], cat [B, K] | None, num [B, J] | None) → ε̂ [B, C, H, W]``."""

    def __init__(self, num_categories, num_numerical: int, in_channels: int = 4, out_channels: int = 4,
                 base_channels: int = 64, levels: int = 4, blocks_per_level: int = 4, attention_levels=(1, 2, 3),
                 num_heads: int = 8, head_dim: int = 64, dropout: float = 0.05, activation: str = "selu",
                 time_embedding_dim: int = 128, condition_embedding_dim: int = 10, condition_channels: int = 10,
                 numerical_missing: str = "paper"):
        super().__init__()
        self.num_categories, self.num_numerical, self.levels = tuple(num_categories), num_numerical, levels
        self.time_embedding_dim = time_embedding_dim
        self.ConditionEmbedding_0 = ConditionEmbedding(num_categories, num_numerical, condition_embedding_dim,
                                                       numerical_missing)
        e_dim = condition_embedding_dim * (len(num_categories) + num_numerical)
        self.time_0 = nn.Linear(time_embedding_dim // 2, time_embedding_dim)
        self.time_1 = nn.Linear(time_embedding_dim, time_embedding_dim)
        self.stem = conv3x3(in_channels, base_channels)
        shared = dict(e_dim=e_dim, temb_dim=time_embedding_dim, blocks=blocks_per_level,
                      condition_channels=condition_channels, num_heads=num_heads, head_dim=head_dim, dropout=dropout,
                      activation=activation)
        for i in range(levels):
            width = base_channels * 2 ** i
            self.add_module(f"down_{i}", Level(width, width, attention=i in attention_levels, down=True, **shared))
            self.add_module(f"up_{i}", Level(4 * width, width, attention=i in attention_levels, down=False, **shared))
        middle = base_channels * 2 ** levels
        self.middle_0 = ResBlock(middle, middle, time_embedding_dim, activation, dropout, authors_group_count, False)
        self.middle_attention = ChannelMajorAttention(middle, num_heads, head_dim, dropout)
        self.middle_1 = ResBlock(middle, middle, time_embedding_dim, activation, dropout, authors_group_count, False)
        self.head = conv3x3(base_channels, out_channels)

    def time_embedding(self, t_B: torch.Tensor) -> torch.Tensor:
        return self.time_1(F.silu(self.time_0(sinusoidal_features(t_B, self.time_embedding_dim // 2))))

    def forward(self, x_BxCxHxW, t_B, cat_BxK=None, num_BxJ=None):
        e_y, temb = self.embed_inputs(x_BxCxHxW, t_B, cat_BxK, num_BxJ)
        h = self.stem(x_BxCxHxW)
        skips = []
        for i in range(self.levels):
            h, before_downsampling = self.get_submodule(f"down_{i}")(h, e_y, temb)
            skips.append(before_downsampling)
        skips.append(h)
        h = self.middle_1(self.middle_attention(self.middle_0(h, temb)), temb)
        for i in reversed(range(self.levels)):
            h = self.get_submodule(f"up_{i}")(torch.cat([h, skips.pop()], dim=1), e_y, temb)
        return self.head(h).float()
