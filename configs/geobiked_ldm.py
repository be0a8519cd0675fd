"""mcLDM on rendered GeoBiked images, the whole pipeline in one command.

    python train.py --config configs/geobiked_ldm.py --workdir runs/geobiked_ldm          # default, ≈ 1.5 h
    python train.py --config configs/geobiked_ldm.py:smoke --workdir runs/ldm_smoke        # minutes on 2 cores
    python train.py --config configs/geobiked_ldm.py:paper --workdir runs/ldm_paper \
        --config.vae.pretrained=/path/to/stable-diffusion-2-1/vae                          # the paper's setting

Renders (or reuses cached) images, trains the first-stage autoencoder into W/autoencoder unless vae.pretrained is
set, precomputes latents, trains the U-Net, evaluates at inference sparsity 0.0…0.9 and writes W/eval.json.
Fields are documented in mcjax/configs/geobiked_ldm.py and mcjax/configs/geobiked_autoencoder.py.
"""

from mcjax.configs.geobiked_ldm import get_config  # noqa: F401
