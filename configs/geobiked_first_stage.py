"""The mcLDM's first stage alone: a small KL autoencoder (the SD VAE module) trained on rendered GeoBiked images.

    python train.py --config configs/geobiked_first_stage.py --workdir runs/geobiked_first_stage

Writes W/autoencoder (diffusers format, with the latent scale measured on the training images) and W/eval.json
(reconstruction MSE, SSIM, PSNR on test images); pass W/autoencoder to an mcLDM run with
--config.first_stage.pretrained=W/autoencoder. ``get_config(preset)`` with the presets of ``geobiked_ldm``
(default | smoke | paper); the mcLDM configs start from this one, so ``data`` and ``first_stage`` mean the same in both.
"""

from mcjax.configs import geobiked_vae
from ml_collections import config_dict


def get_config(preset: str = "default"):
    preset = preset or "default"
    config = config_dict.ConfigDict()
    config.job = "first_stage"

    config.data = geobiked_vae.get_config().data  # the table, its columns and the 85/15 split of the mcVAE
    config.data.update(dict(
        image_size=64,  # images are square, rendered from the table (or read from image_dir) at this size
        image_dir="",  # a folder of real GeoBiked images named by bike index (e.g. 17.png); "" renders them
        index_column="Bike index",  # the column image files in image_dir are named by
        image_column="",  # a column of image paths relative to image_dir instead (configs/image_folder_ldm.py)
        image_fit="pad",  # image_dir: pad (white borders keep the whole picture) | crop (centre square)
        skip_unreadable_images=False,  # image_dir: leave out rows whose image is missing or unreadable (counted)
        decode_workers=0,  # image_dir: threads decoding images (0: one per core + 4)
        max_device_latent_bytes=4 * 2**30,  # the training latents go to the device whole up to this size
        render_cache_dir="~/.cache/mcjax/renders",
    ))

    config.first_stage = config_dict.ConfigDict(dict(
        # A diffusers AutoencoderKL folder (e.g. the vae/ of stable-diffusion-2-1), a pipeline folder, or a hub id in
        # the local Hugging Face cache; or the autoencoder/ of another workdir. "": train one into W/autoencoder with
        # the architecture and training settings below.
        pretrained="",
        block_out_channels=(8, 32, 64),  # 2 downsamplings: 64 px → 16 × 16 latents; few full-size channels (CPU)
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        steps=1500,  # 0: no training here (pretrained or an existing W/autoencoder is required)
        batch_size=16,
        learning_rate=1e-3,
        kl_weight=1e-6,  # the LDM setting; the KL is summed over latent dimensions
        reconstruction="l1",  # l1 | l2
        seed=0,
        steps_per_chunk=0,  # steps per compiled call; 0: 1 on CPUs (convolutions in loops are slow there), else 500
        latent_batch_size=64,  # images per batch when precomputing latents
        max_train_images=0,  # > 0: train on a seeded sample of this many training images (bounds host memory)
    ))

    config.train = config_dict.ConfigDict(dict(progress=True, tensorboard=False))  # the mcLDM adds the U-Net's
    config.eval = config_dict.ConfigDict(dict(num_rows=256, batch_size=64))  # reconstructions of test images

    if preset == "smoke":
        config.data.image_size = 32
        config.first_stage.update(dict(block_out_channels=(8, 16, 16), norm_num_groups=8, steps=200,
                                       learning_rate=2e-3))
        config.eval.num_rows = 32
    elif preset == "paper":
        config.data.image_size = 512  # needs first_stage.pretrained: the SD 2.1 VAE (64 × 64 × 4 latents)
        # The SD 2.1 VAE's architecture; steps=0: not trained here, first_stage.pretrained must point to its weights.
        config.first_stage.update(dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                                       steps=0, batch_size=8, learning_rate=1e-4))
    config.compilation_cache_dir = "~/.cache/mcjax/xla"
    return config
