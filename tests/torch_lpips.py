"""PyTorch twin of ``lpips.LPIPS(net='vgg'|'alex', version='0.1')`` (lpips 0.1.4, BSD-2-Clause, R. Zhang et al.).

The oracle for tests/test_lpips.py. The ``lpips`` package needs torchvision, whose PyPI wheel (a CUDA build) cannot
load beside mcjax's CPU PyTorch, so CI cannot import it; this twin copies its forward pass line for line and builds
the trunks as torchvision's ``vgg16().features`` / ``alexnet().features`` are. Where the real package imports,
tests/test_lpips.py checks this twin against it (``real_lpips``).
"""

import sys
import types

import torch
from torch import nn

# torchvision.models.vgg.cfgs["D"]; "M" is MaxPool2d(2, 2).
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
SLICES = {"vgg": (4, 9, 16, 23, 30), "alex": (2, 5, 8, 10, 12)}  # lpips.pretrained_networks slice ends
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` (make_layers(cfgs["D"]), no batch norm), torchvision's init."""
    layers, in_channels = [], 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features``."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def randomise_(model: nn.Module) -> None:
    """Random weights everywhere, biases and positive lin weights included, so every mapping is exercised."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("lin"):
                p.uniform_(0.0, 1.0)
            elif p.ndim == 4:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
            else:
                p.uniform_(-0.1, 0.1)


class LPIPSTwin(nn.Module):
    """lpips.LPIPS v0.1 at eval, spatial=False: ``forward(in0, in1, normalize=True)`` -> [B, 1, 1, 1]."""

    def __init__(self, net: str):
        super().__init__()
        self.register_buffer("shift", torch.Tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.Tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.features = vgg16_features() if net == "vgg" else alexnet_features()
        self.ends = SLICES[net]
        for k, c in enumerate(CHANNELS[net]):  # NetLinLayer: Dropout (index 0, off at eval), 1x1 conv (index 1)
            setattr(self, f"lin{k}", nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, stride=1, padding=0, bias=False)))

    def trunk(self, x):
        outs, start = [], 0
        for end in self.ends:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs

    def forward(self, in0, in1, normalize=True):
        if normalize:
            in0, in1 = 2 * in0 - 1, 2 * in1 - 1
        outs0 = self.trunk((in0 - self.shift) / self.scale)
        outs1 = self.trunk((in1 - self.shift) / self.scale)
        val = 0
        for k, (f0, f1) in enumerate(zip(outs0, outs1)):
            f0 = f0 / (torch.sqrt(torch.sum(f0**2, dim=1, keepdim=True)) + 1e-10)
            f1 = f1 / (torch.sqrt(torch.sum(f1**2, dim=1, keepdim=True)) + 1e-10)
            val = val + getattr(self, f"lin{k}")((f0 - f1) ** 2).mean([2, 3], keepdim=True)
        return val

    def torchvision_state_dict(self) -> dict:
        """The trunk as torchvision names it (``features.N.weight``), as in ``vgg16-397923af.pth``."""
        return {f"features.{k}": v.contiguous() for k, v in self.features.state_dict().items()}

    def lin_state_dict(self) -> dict:
        """The linear layers as lpips ships them (``linK.model.1.weight``, as in ``weights/v0.1/vgg.pth``)."""
        return {f"lin{k}.model.1.weight": getattr(self, f"lin{k}")[1].weight.detach().clone() for k in range(5)}


def real_lpips(net: str, twin: LPIPSTwin, monkeypatch):
    """The real ``lpips.LPIPS`` holding the twin's weights, or None where the package cannot be imported.

    Without a working torchvision, ``torchvision.models`` is stood in for by the twin's trunks, so lpips' own code
    (scaling, slicing, normalisation, lin layers) still runs.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or a CUDA build beside CPU PyTorch (RuntimeError: torchvision::nms)
        models = types.SimpleNamespace(
            vgg16=lambda pretrained=False, **_: types.SimpleNamespace(features=vgg16_features()),
            alexnet=lambda pretrained=False, **_: types.SimpleNamespace(features=alexnet_features()),
            squeezenet1_1=None,
        )
        monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
        for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
            monkeypatch.delitem(sys.modules, name)
    try:
        import lpips
    except ImportError:
        return None
    model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False).eval()
    state = {f"net.slice{k + 1}.{i}.{p}": v for k, i, p, v in _sliced(twin)}
    state.update({f"lin{k}.model.1.weight": w for k, w in enumerate(twin.lin_state_dict().values())})
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    return model


def _sliced(twin: LPIPSTwin):
    """(slice index, features index, param name, tensor) of the twin's trunk, as lpips' slices hold them."""
    starts = (0, *twin.ends[:-1])
    for k, (start, end) in enumerate(zip(starts, twin.ends)):
        for i in range(start, end):
            for p, v in twin.features[i].state_dict().items():
                yield k, i, p, v
