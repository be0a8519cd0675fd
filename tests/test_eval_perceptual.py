"""LPIPS and CLIP similarity in the mcLDM evaluation (mcjax.eval.perceptual) and the Table 4 report."""

import numpy as np
import pytest
from mcjax.configs.geobiked_ldm import get_config
from safetensors.numpy import save_file

from mcjax.eval.ldm_report import results_markdown
from mcjax.eval.perceptual import perceptual_from_config, perceptual_scores
from mcjax.models.lpips import LPIPS_CHANNELS

ALEX = [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)]


def _alex_files(tmp_path):
    """A random AlexNet trunk in torchvision's names and lpips linear layers, both as safetensors."""
    rng = np.random.default_rng(0)
    trunk = {}
    for i, out, inp, k in ALEX:
        trunk[f"features.{i}.weight"] = (rng.normal(size=(out, inp, k, k)) / np.sqrt(inp * k * k)).astype(np.float32)
        trunk[f"features.{i}.bias"] = np.zeros(out, np.float32)
    lin = {f"lin{k}.model.1.weight": rng.uniform(size=(1, c, 1, 1)).astype(np.float32)
           for k, c in enumerate(LPIPS_CHANNELS["alex"])}
    save_file(trunk, tmp_path / "alexnet.safetensors")
    save_file(lin, tmp_path / "alex_lin.safetensors")
    return str(tmp_path / "alexnet.safetensors"), str(tmp_path / "alex_lin.safetensors")


def _clip_folder(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=32, patch_size=8, projection_dim=16)
    transformers.CLIPVisionModelWithProjection(vision).save_pretrained(tmp_path / "clip")
    return str(tmp_path / "clip")


def test_no_weights_no_metrics():
    assert perceptual_from_config(get_config("smoke").eval) is None


def test_named_weights_score_generated_against_true_images(tmp_path):
    config = get_config("smoke").eval
    config.lpips_backbone, config.lpips_lin = _alex_files(tmp_path)
    config.clip_weights = _clip_folder(tmp_path)
    perceptual = perceptual_from_config(config)
    rng = np.random.default_rng(1)
    truth = rng.uniform(size=(5, 64, 64, 3)).astype(np.float32)
    same = perceptual_scores(perceptual, truth, truth, batch_size=2)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6) and same["clip_similarity"] == pytest.approx(1.0, abs=1e-5)
    other = perceptual_scores(perceptual, truth[::-1].copy(), truth, batch_size=2)
    assert other["lpips"] > 1e-4 and other["clip_similarity"] < 1.0
    config.clip_weights = ""
    assert set(perceptual_scores(perceptual_from_config(config), truth, truth, 4)) == {"lpips"}


def test_results_set_the_run_beside_the_papers_table_4():
    config = get_config("default")
    summary = {"inference_sparsity": [0.0, 0.5], "num_rows": 128, "mse": [0.02, 0.03], "ssim": [0.7, 0.6],
               "condition_accuracy": [0.9, 0.8], "condition_accuracy_real": [0.95, 0.95], "fd": [3.0, None],
               "fd_num_images": [512, None], "fd_reference": {"fd": 1.5, "fd_num_images": 512}}
    text = results_markdown(summary, config)
    assert "| paper, Table 4 (geobiked) | | 0.0269 | 0.8583 | 0.0681 | 0.9854 | – | – |" in text
    assert "| this run | 0.0 | 0.0200 | 0.7000 | – | – | 0.900 | 3.00 |" in text
    assert "| this run | 0.5 | 0.0300 | 0.6000 | – | – | 0.800 | – |" in text
    assert "real test images (judge ceiling) | 0.0 | – | – | – | – | 0.950 | 1.50 |" in text
    assert "LPIPS ↓ and CLIP similarity ↑: not computed" in text and "rendered bikes at 64 px" in text
    config.eval.paper_table = ""
    assert "paper, Table 4" not in results_markdown(summary, config)
