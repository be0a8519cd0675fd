"""PyTorch twin of open_clip's ``VisionTransformer`` (open_clip 3.3, MIT), the oracle for tests/test_clip.py.

open_clip needs torchvision, which CI's CPU PyTorch cannot load, so this twin reproduces its image tower with the
same module names (``visual.conv1``, ``transformer.resblocks.N.attn`` as ``nn.MultiheadAttention`` with its packed
``in_proj_weight``, ``mlp.c_fc`` / ``c_proj``, ``ls_1.gamma``, ``ln_post``, ``proj``) and forward pass (pool
``tok``, LayerNorm before pooling). Where open_clip imports, tests/test_clip.py checks this twin against it.
"""

from collections import OrderedDict

import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    def __init__(self, dim, init_values):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, mlp_ratio, act, ls_init_value):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ls_1 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", act()), ("c_proj", nn.Linear(hidden, width))])
        )
        self.ls_2 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.ls_1(self.attn(h, h, h, need_weights=False)[0])
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp_ratio, act, ls_init_value):
        super().__init__()
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act, ls_init_value) for _ in range(layers)]
        )

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, width, layers, heads, mlp_ratio, output_dim, quick_gelu, ls=None):
        super().__init__()
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        grid = image_size // patch_size
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        act = QuickGELU if quick_gelu else nn.GELU
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act, ls)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [B, grid*grid, width]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x)
        return x[:, 0] @ self.proj


class CLIPImageTower(nn.Module):
    """Holds the tower as ``visual`` so the state dict has open_clip's ``visual.*`` keys."""

    def __init__(self, **kwargs):
        super().__init__()
        self.visual = VisionTransformer(**kwargs)

    def encode_image(self, x):
        return self.visual(x)


def randomise_biases_and_norms_(model: nn.Module) -> None:
    """Biases start at 0 and LayerNorms at (1, 0); random values make a swapped or dropped one show."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.MultiheadAttention):
                m.in_proj_bias.uniform_(-0.2, 0.2)
