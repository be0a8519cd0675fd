"""The mcLDM's first stage alone: a small KL autoencoder trained on rendered GeoBiked images.

    python train.py --config configs/geobiked_autoencoder.py --workdir runs/geobiked_ae

Writes W/autoencoder (diffusers format, with the latent scale measured on the training images) and W/eval.json
(reconstruction MSE, SSIM, PSNR on test images). Pass W/autoencoder to an mcLDM run with
--config.vae.pretrained=W/autoencoder. Presets: configs/geobiked_autoencoder.py:smoke | :paper.
"""

from mcjax.configs.geobiked_autoencoder import get_config  # noqa: F401
