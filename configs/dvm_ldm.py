"""mcLDM on DVM-Car, the paper's second image dataset, in the authors' setting (configs/mcldm_dvm.yaml of the
authors' code).

    python prepare_dvm.py --tables /data/dvm/tables --output /data/dvm/dvm_front.csv
    python train.py --config configs/dvm_ldm.py --workdir runs/dvm \
        --config.data.image_dir=/data/dvm/images --config.data.csv_path=/data/dvm/dvm_front.csv \
        --config.first_stage.pretrained=/path/to/stable-diffusion-2-1/vae
    python sample.py --workdir runs/dvm --condition brand=Audi --condition body_type=SUV --output_dir samples/

Users download the release (deepvisualmarketing.github.io); ``prepare_dvm.py`` turns its tables into the image table
(mcjax.data.dvm_car: quality-checked front views, 14 conditions, values the tables lack left missing). The setting:
256 px through the SD 2.1 VAE (32 × 32 × 4 latents), the authors' U-Net layout with 128 start channels, 4 levels of
4 ResBlocks, attention at levels 1-3 with 8 heads × 64, a 32-dimensional embedding per condition, batch 128, AdamW
1e-4 (0.9, 0.99) with weight decay 1e-6, sparsity linear 0.1 → 0.25, 500k steps, an 80/20 split. It needs an
accelerator (the paper: about 30 h on one A6000). ``get_config("smoke")`` is the same pipeline tiny everywhere, with a
first stage trained here: it checks a prepared table end to end in minutes on a CPU.
"""

from mcjax.configs import geobiked_first_stage, image_folder_ldm

PRESETS = ("default", "smoke")
CATEGORICAL = ("brand", "model", "body_type", "colour")  # mcjax.data.dvm_car
NUMERICAL = ("year", "entry_price", "length", "width", "height", "doors", "seats", "engine_power", "mpg", "top_speed")


def get_config(preset: str = "default"):
    preset = preset or "default"
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r} for dvm_ldm; choose from {PRESETS}.")
    config = image_folder_ldm.get_config(preset)
    config.data.update(dict(image_column="image", categorical_columns=CATEGORICAL, numerical_columns=NUMERICAL,
                            test_fraction=0.2))
    config.refine.prompt_template = (  # sample.py --refine (mcjax.generate.prompts)
        "a photo of a [{year} ][{colour} ][{brand} ][{model} ]car, {body_type} body, {doors} doors, front view, "
        "studio lighting, plain background")
    if preset == "smoke":
        return config
    config.data.image_size = 256
    config.first_stage.update(geobiked_first_stage.get_config("paper").first_stage)  # the SD 2.1 VAE, not trained
    config.model.update(dict(layout="reference", base_channels=128, channel_multipliers=(1, 2, 4, 8),
                             blocks_per_level=4, attention_levels=(1, 2, 3), num_heads=8, head_dim=64,
                             condition_embedding_dim=32, condition_channels=32, numerical_missing="paper",
                             dtype="bfloat16"))
    config.diffusion.loss_weighting = "uniform"  # the paper's plain ε-MSE
    config.sparsity.update(dict(kind="linear", p_start=0.1, p_end=0.25))
    config.train.update(dict(steps=500_000, batch_size=128, learning_rate=1e-4, b1=0.9, b2=0.99, weight_decay=1e-6,
                             ema_decay=0.9999, checkpoint_every_steps=5000))
    # guidance 1: the authors' sampler (cfg_scale 0 in their (1 + w) eps_c - w eps_u).
    config.eval.update(dict(num_rows=1024, batch_size=64, every_steps=50_000, paper_table="dvm", guidance_scale=1.0))
    return config
