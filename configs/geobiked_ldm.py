"""mcLDM on rendered GeoBiked images: first-stage autoencoder, latents, conditional U-Net, evaluation.

    python train.py --config configs/geobiked_ldm.py --workdir runs/geobiked_ldm          # default
    python train.py --config configs/geobiked_ldm.py:smoke --workdir runs/ldm_smoke        # minutes on 2 cores
    python train.py --config configs/geobiked_ldm.py:paper --workdir runs/ldm_paper \
        --config.first_stage.pretrained=/path/to/stable-diffusion-2-1/vae                  # the paper's setting

Renders (or reuses cached) images, trains the first-stage autoencoder into W/autoencoder unless
first_stage.pretrained is set, precomputes latents, trains the U-Net, writes the inference bundle, evaluates at
inference sparsity 0.0…0.9 and writes W/eval.json. ``get_config(preset)`` with preset:
- ``default`` (""): 64 px renders → a small KL autoencoder trained here (16 × 16 × 4 latents) → a 5.1 M-parameter
  U-Net (32 channels, levels 1-2-4, attention at the two inner levels), sized for a 2-core CPU: 10,000 steps at
  ≈ 0.33 s there with min-SNR loss weighting, and an SSIM curve every 2,500 steps (docs/mcldm.md: how quality grows
  with steps, and with which loss).
- ``smoke``: the same pipeline, tiny everywhere; finishes in a few minutes on 2 CPU cores (CLI tests, a first try).
- ``paper``: the paper's GeoBiked setting (512 px, SD 2.1 VAE latents 64 × 64 × 4, the authors' U-Net layout:
  64 → 128 → 256 → 512 channels, 4 ResBlocks per level, attention at levels 1-3 with 8 heads × 64, 115,763,732
  parameters besides the condition embedding; batch 32 × 2 accumulation, AdamW 1e-4). Needs the real SD 2.1 VAE
  weights (``--config.first_stage.pretrained=/path/to/vae``) and an accelerator.
"""

from mcjax.configs import geobiked_first_stage, geobiked_vae
from ml_collections import config_dict

PRESETS = ("default", "smoke", "paper")


def get_config(preset: str = "default"):
    preset = preset or "default"
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r} for geobiked_ldm; choose from {PRESETS}.")
    config = geobiked_first_stage.get_config(preset)  # data + the first stage
    config.job = "ldm"

    config.model = config_dict.ConfigDict(dict(  # mcjax.models.ldm.unet_from_config
        layout="mcjax",  # mcjax (models/unet.py) | reference: the authors' network (models/unet_reference.py)
        base_channels=32,
        channel_multipliers=(1, 2, 4),  # one per resolution level
        blocks_per_level=2,
        attention_levels=(1, 2),  # 0-based
        num_heads=4,
        head_dim=32,
        dropout=0.05,  # ResBlocks and attention, training only
        activation="selu",  # selu (paper) | silu
        time_embedding_dim=128,
        condition_embedding_dim=10,  # per condition
        condition_channels=32,  # channels the projected e_y adds per level (the authors': condition_embedding_dim)
        numerical_missing="indicator",  # indicator | paper (-1) | reference (0)
        dtype="float32",  # compute dtype: bfloat16 on accelerators (parameters and normalisation stay float32)
    ))

    config.diffusion = config_dict.ConfigDict(dict(
        schedule="linear",  # linear (paper: beta 1e-4 … 0.02) | cosine
        num_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        loss_weighting="min_snr",  # min_snr (Hang et al. 2023: ~2.5x fewer steps here, docs/mcldm.md) | uniform (paper)
        min_snr_gamma=5.0,  # min_snr: w_t = min(SNR_t, gamma) / SNR_t
    ))

    config.sparsity = geobiked_vae.get_config().sparsity  # condition sparsity p_t per step (mcjax.schedules)
    config.sparsity.update(dict(kind="linear", p_start=0.1, p_end=0.25))  # the paper's linear 0.1 → 0.25

    config.train = config_dict.ConfigDict(dict(
        steps=10_000,
        batch_size=32,  # global batch, split over all devices of all processes
        learning_rate=3e-4,  # the paper's 1e-4 is for 200k steps on 64 × 64 latents; 1e-3 was no faster here
        b1=0.9,
        b2=0.99,
        weight_decay=1e-6,
        ema_decay=0.999,
        masking="per_condition",  # per_condition (paper) | all_at_once
        sparsity_target="observed",  # observed: p_t masks the labels the data has | total: p_t counts its gaps too
        seed=0,
        steps_per_chunk=0,  # steps per compiled call; 0: 1 on CPUs (convolutions in loops are slow there), else 100
        log_every_steps=50,
        checkpoint_every_steps=1000,
        progress=True,
        tensorboard=True,
    ))

    config.eval = config_dict.ConfigDict(dict(
        inference_sparsity=tuple(round(0.1 * i, 1) for i in range(10)),
        num_rows=128,  # test rows generated per level (0: the whole test split)
        # The sampler (mcjax.models.ldm.SamplerSettings): DDIM over 100 of the T steps with eta 1 (ancestral noise).
        # On a 20k-step U-Net (uniform loss), SSIM at sparsity 0 was 0.718-0.720 over 3 noise seeds against
        # 0.688-0.692 for 50 steps with eta 0 (docs/mcldm.md).
        sampler="ddim",  # ddim | ddpm
        num_steps=100,  # DDIM steps
        eta=1.0,  # 0: deterministic given x_T; 1: ancestral (DDPM-like) noise at every step
        # Classifier-free guidance eps_u + s (eps_c - eps_u); 1: plain conditional prediction. 1.5 had the lowest FD
        # of 1 / 1.5 / 2 / 3 and 0.97 of the judge's ceiling in condition accuracy (docs/mcldm.md); twice the cost.
        guidance_scale=1.5,
        batch_size=128,
        seed=0,
        grid_rows=8,  # test rows shown in eval.png (ground truth + one column per level)
        every_steps=2500,  # > 0: also score the EMA weights every N training steps → eval_curve.jsonl
        # The levels scored every_steps (same rows, sampler and masks as above). When they are among inference_sparsity
        # and the last step is a multiple of every_steps, the last point is read from the final evaluation.
        curve_sparsity=(0.0, 0.9),
        # The judge's Fréchet distance needs ≥ 500 images to be trusted: at these levels fd_num_rows test rows are
        # generated (the scores above still use the first num_rows); null at the others. () : no FD.
        fd_sparsity=(0.0, 0.5, 0.9),
        fd_num_rows=512,
        # The paper's Table 4 perceptual scores, from weight files you have (docs/mcldm.md); "" leaves a metric out.
        lpips_net="alex",  # alex | vgg (the lpips package's default is alex; the paper does not say)
        lpips_backbone="",  # torchvision's alexnet-owt-7be5be79.pth / vgg16-397923af.pth (or .safetensors)
        lpips_lin="",  # "" : the installed lpips package's weights/v0.1/<net>.pth
        clip_weights="",  # a Hugging Face CLIP folder (e.g. openai/clip-vit-base-patch32) or an open_clip checkpoint
        paper_table="geobiked",  # results.md sets the run beside the paper's Table 4 row: geobiked | dvm | "" (none)
        # Also score these guidance scales (e.g. (1.0, 1.5, 2.0, 3.0)) → eval.json guidance_sweep, at these levels
        # (each on fd_num_rows rows, FD included: 512 rows × 4 scales cost ≈ 13 min per level on 2 CPU cores).
        guidance_sweep=(),
        guidance_sweep_sparsity=(0.0,),
    ))

    # The condition judge (mcjax.models.judge): one head per condition, trained on the real training images into
    # W/judge; evaluation scores generated images by it (condition_accuracy, numerical_error, fd). steps=0: no judge.
    config.judge = config_dict.ConfigDict(dict(
        steps=600,  # ≈ 3 min on 2 CPU cores at 64 px; longer only overfits the 3,702 training bikes
        batch_size=64,
        learning_rate=1e-3,  # AdamW, cosine-decayed to 0
        weight_decay=1e-4,
        base_channels=32,  # doubled per stride-2 stage down to 4 × 4, at most max_channels
        max_channels=128,
        feature_dim=256,  # the penultimate layer: the features of the Fréchet distance
        max_train_images=20_000,  # a seeded subset of larger training splits (0: all), held in memory as uint8
        seed=0,
        steps_per_chunk=0,  # 0: 1 on CPUs, else 200
    ))

    # Refinement by a large pretrained model (sample.py --refine sdxl|flux; mcjax.generate.refine): the prompt from the
    # given conditions. Fields in braces are conditions; a comma clause naming one not given drops out, [bracketed]
    # text alone (mcjax.generate.prompts). The paper's refiner settings are defaults of sample.py's flags.
    config.refine = config_dict.ConfigDict(dict(
        prompt_template="a [{BikeStyle} ]bicycle, frame size {frame_size}, {RIM_STYLE front} front wheel, "
                        "{RIM_STYLE rear} rear wheel, {Teeth on chainring} teeth chainring, "
                        "technical side-view drawing, black lines on white background",
    ))

    if preset == "smoke":
        config.model.update(dict(base_channels=16, channel_multipliers=(1, 2), blocks_per_level=1,
                                 attention_levels=(1,), num_heads=2, head_dim=16, time_embedding_dim=32,
                                 condition_embedding_dim=4, condition_channels=8))
        config.train.update(dict(steps=300, batch_size=32, learning_rate=2e-3, ema_decay=0.99,
                                 checkpoint_every_steps=100, log_every_steps=25))
        config.eval.update(dict(num_rows=16, num_steps=10, inference_sparsity=(0.0, 0.5, 0.9), grid_rows=4,
                                fd_sparsity=(0.0,), fd_num_rows=32, guidance_scale=1.0))
        config.judge.update(dict(steps=60, batch_size=32, base_channels=8, max_channels=16, feature_dim=32))
    elif preset == "paper":
        # The authors' network: 64 → 128 → 256 → 512 channels, bottleneck 1024; 115,763,732 parameters + the tables.
        config.model.update(dict(layout="reference", base_channels=64, channel_multipliers=(1, 2, 4, 8),
                                 blocks_per_level=4, attention_levels=(1, 2, 3), num_heads=8, head_dim=64,
                                 condition_channels=10, numerical_missing="paper", dtype="bfloat16"))
        config.diffusion.loss_weighting = "uniform"  # the paper's plain ε-MSE
        # The paper's batch of 32 with 2 accumulation steps as one global batch of 64.
        config.train.update(dict(steps=200_000, batch_size=64, learning_rate=1e-4, ema_decay=0.9999,
                                 checkpoint_every_steps=5000))
        # guidance 1: the authors' sampler (cfg_scale 0 in their (1 + w) eps_c - w eps_u).
        config.eval.update(dict(num_rows=0, batch_size=32, every_steps=10_000, guidance_scale=1.0))
    return config

