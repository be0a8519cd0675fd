"""MSE, PSNR and SSIM for generated images."""

import numpy as np
import pytest

from mcjax import image_metrics


def _reference_ssim(a, b):
    """A direct transcription of the documented SSIM: every valid window position, every channel, explicit sums.
    (Checked once against scikit-image's structural_similarity with gaussian_weights=True: equal to 1e-6.)"""
    offsets = np.arange(11) - 5
    g = np.exp(-offsets**2 / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    h, wd, c = a.shape
    values = []
    for ch in range(c):
        for i in range(h - 10):
            for j in range(wd - 10):
                pa, pb = a[i:i + 11, j:j + 11, ch], b[i:i + 11, j:j + 11, ch]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
                cov = (w * pa * pb).sum() - ma * mb
                values.append(((2 * ma * mb + 1e-4) * (2 * cov + 9e-4)) / ((ma**2 + mb**2 + 1e-4) * (va + vb + 9e-4)))
    return np.mean(values)


def test_ssim_matches_the_documented_formula():
    rng = np.random.default_rng(0)
    a = rng.random((2, 16, 14, 3)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    got = np.asarray(image_metrics.ssim(a, b))
    np.testing.assert_allclose(got, [_reference_ssim(a[i], b[i]) for i in range(2)], atol=2e-5)
    np.testing.assert_allclose(np.asarray(image_metrics.ssim(a, a)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(image_metrics.ssim(b, a)), got, atol=1e-6)  # symmetric
    assert float(image_metrics.ssim(a, 1 - a)[0]) < 0.1


def test_psnr_and_mse():
    a = np.full((1, 12, 12, 3), 0.5, np.float32)
    b = a + 0.1
    np.testing.assert_allclose(np.asarray(image_metrics.mse(a, b)), 0.01, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(image_metrics.psnr(a, b)), 20.0, rtol=1e-4)
    assert np.isinf(np.asarray(image_metrics.psnr(a, a))[0])


def test_ssim_rejects_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11"):
        image_metrics.ssim(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)))
