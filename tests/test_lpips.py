"""LPIPS in JAX against PyTorch, with random weights: the twin of the ``lpips`` package in tests/torch_lpips.py
always, and the package itself where it imports (it needs torchvision, which CI's CPU PyTorch cannot load).

The trunk is written as a torchvision ``features.N.*`` state dict and the linear layers as the package's
``linK.model.1.weight`` file, then loaded in JAX.
"""

import sys

import numpy as np
import pytest

from mcjax.errors import InputError
from mcjax.models.lpips import LPIPS_CHANNELS, default_lin_path, load_lpips, lpips_distance

SIZES = {"vgg": 32, "alex": 64}  # small, yet every slice keeps at least 2x2 pixels


def _twin(net: str):
    pytest.importorskip("torch")
    import torch

    from tests.torch_lpips import LPIPSTwin, randomise_

    torch.manual_seed(0)
    twin = LPIPSTwin(net).eval()
    randomise_(twin)
    return twin


def _write_files(twin, net: str, tmp_path, fmt: str):
    """(trunk file as torchvision names it, lin file as lpips ships it)."""
    import torch

    lin_path = tmp_path / f"{net}.pth"
    torch.save(twin.lin_state_dict(), lin_path)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        trunk_path = tmp_path / f"{net}_trunk.safetensors"
        save_file(twin.torchvision_state_dict(), trunk_path)
    else:
        trunk_path = tmp_path / f"{net}_trunk.pth"
        torch.save(twin.torchvision_state_dict(), trunk_path)
    return trunk_path, lin_path


def _images(net: str):
    rng = np.random.default_rng(0)
    size = SIZES[net]
    a = rng.uniform(size=(3, size, size, 3)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1).astype(np.float32)
    b[2] = a[2]  # identical images: distance 0
    return a, b


def _torch_distance(model, a, b):
    import torch

    to_torch = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2)  # noqa: E731
    with torch.no_grad():
        return model(to_torch(a), to_torch(b), normalize=True).reshape(-1).numpy()


@pytest.mark.parametrize("net,fmt", [("vgg", "pth"), ("alex", "safetensors")])
def test_lpips_matches_pytorch(net, fmt, tmp_path):
    twin = _twin(net)
    module, variables = load_lpips(net, *_write_files(twin, net, tmp_path, fmt))
    a, b = _images(net)
    got = np.asarray(lpips_distance(module, variables, a, b))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, _torch_distance(twin, a, b), rtol=0, atol=1e-4)
    assert abs(got[2]) < 1e-9 and got[0] > 1e-3


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_twin_is_the_lpips_package(net, monkeypatch):
    """Runs where the lpips package imports (with its own code; a missing torchvision's trunks stood in for)."""
    twin = _twin(net)  # skips without PyTorch, before the twin's module imports it
    from tests.torch_lpips import real_lpips

    real = real_lpips(net, twin, monkeypatch)
    if real is None:
        pytest.skip("the lpips package is not installed")
    a, b = _images(net)
    np.testing.assert_allclose(_torch_distance(real, a, b), _torch_distance(twin, a, b), rtol=0, atol=1e-6)


def _alex_trunk_file(tmp_path):
    """A zero AlexNet trunk in torchvision's names, as safetensors."""
    from safetensors.numpy import save_file

    trunk = {
        f"features.{i}.weight": np.zeros((c, 3 if i == 0 else 4, k, k), np.float32)
        for i, c, k in [(0, 64, 11), (3, 192, 5), (6, 384, 3), (8, 256, 3), (10, 256, 3)]
    }
    trunk.update({k.replace("weight", "bias"): np.zeros(v.shape[0], np.float32) for k, v in trunk.items()})
    path = tmp_path / "alexnet.safetensors"
    save_file(trunk, path)
    return path


def test_default_lin_file_is_the_packages(tmp_path):
    pytest.importorskip("torch")
    package_file = default_lin_path("alex")
    if package_file is None:
        pytest.skip("the lpips package is not installed")
    assert package_file.name == "alex.pth"
    trunk_path = _alex_trunk_file(tmp_path)
    _, variables = load_lpips("alex", trunk_path)
    import torch

    shipped = torch.load(package_file, map_location="cpu", weights_only=True)
    for k, channels in enumerate(LPIPS_CHANNELS["alex"]):
        kernel = np.asarray(variables["params"][f"lin{k}"]["kernel"])
        assert kernel.shape == (1, 1, channels, 1)
        np.testing.assert_array_equal(kernel[0, 0, :, 0], shipped[f"lin{k}.model.1.weight"].numpy().reshape(-1))


def test_missing_and_wrong_files_are_named(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(InputError, match="vgg16-397923af.pth.*does not exist"):
        load_lpips("vgg", tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth")
    with pytest.raises(InputError, match="net 'squeeze'"):
        load_lpips("squeeze", tmp_path / "x.pth")

    alex_path = _alex_trunk_file(tmp_path)
    lin_path = tmp_path / "vgg_lin.safetensors"
    save_file(
        {f"lin{k}.model.1.weight": np.ones((1, c, 1, 1), np.float32) for k, c in enumerate(LPIPS_CHANNELS["vgg"])},
        lin_path,
    )
    with pytest.raises(InputError, match="alexnet.safetensors.*vgg16 expects.*other network"):
        load_lpips("vgg", alex_path, lin_path)
    with pytest.raises(InputError, match="vgg_lin.safetensors.*other network"):
        load_lpips("alex", alex_path, lin_path)
    with pytest.raises(InputError, match="no lin0.model.1.weight"):
        load_lpips("alex", alex_path, alex_path)

    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="broken.safetensors.*not a readable safetensors"):
        load_lpips("alex", garbage, lin_path)
    (tmp_path / "x.npz").write_bytes(b"")
    with pytest.raises(InputError, match="unknown format '.npz'"):
        load_lpips("alex", tmp_path / "x.npz", lin_path)


def test_pickles_without_torch_name_the_install_command(tmp_path, monkeypatch):
    path = tmp_path / "vgg16-397923af.pth"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(InputError, match=r"vgg16-397923af.pth.*pip install 'mcjax\[torch\]'"):
        load_lpips("vgg", path, path)


def test_mismatched_batches_are_refused(tmp_path):
    from mcjax.models.lpips import LPIPS

    with pytest.raises(InputError, match="two \\[B, H, W, 3\\] batches"):
        lpips_distance(LPIPS("alex"), {}, np.zeros((2, 64, 64, 3)), np.zeros((3, 64, 64, 3)))
