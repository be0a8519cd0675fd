"""mcLDM on any folder of images listed in a CSV with their conditions: the GeoBiked pipeline, set by config alone.

    python train.py --config configs/image_folder_ldm.py --workdir runs/shapes \
        --config.data.image_dir=/data/shapes --config.data.csv_path=/data/shapes/labels.csv \
        --config.data.image_column=file --config.data.categorical_columns="('shape', 'colour')" \
        --config.data.numerical_columns="('size',)"
    python sample.py --workdir runs/shapes --condition shape=circle --num_samples 8 --output_dir samples/

The CSV has one row per image: ``image_column`` holds its path relative to ``image_dir`` (subfolders allowed; an
absolute path, one leading out of ``image_dir`` or two rows naming one file are errors), the condition columns its
labels (an empty cell, or a value in ``*_na_values``, is a missing label). PNG, JPEG, WebP and BMP files of any mode
load as the same RGB picture (transparency over white), made square by ``image_fit``. Images stay on disk: they are
decoded in parallel batch by batch, the first stage trains on at most ``first_stage.max_train_images`` of them, and
the latents are encoded once into the memory-mapped ``W/latents.npy``. Split, statistics, masking, evaluation and
sample.py work as for GeoBiked (configs/geobiked_ldm.py, whose model, diffusion and training settings this uses).
``get_config(preset)``: ``default`` (64 px, the GeoBiked default's 10,000 U-Net steps: hours on 2 CPU cores) or
``smoke`` (32 px, a few minutes; tests).
"""

from mcjax.configs import geobiked_ldm
from ml_collections import config_dict

PRESETS = ("default", "smoke")


def get_config(preset: str = "default"):
    preset = preset or "default"
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r} for image_folder_ldm; choose from {PRESETS}.")
    config = geobiked_ldm.get_config(preset)
    image_size = config.data.image_size  # 64 (smoke: 32)
    config.data = config_dict.ConfigDict(dict(
        image_dir="",  # the folder the image paths are relative to
        csv_path="",  # one row per image: its path and its conditions (optionally .csv.gz)
        image_column="image",  # the column of image paths, relative to image_dir
        categorical_columns=(),  # conditions with named values, e.g. ("shape", "colour")
        numerical_columns=(),  # numerical conditions, min-max scaled on the training split
        numerical_na_values=(),  # numbers that mean "missing" (empty cells always do)
        categorical_na_values=(),  # category values that mean "missing", e.g. ("unknown",)
        image_size=image_size,  # square images of this size
        image_fit="pad",  # pad: whole picture, white borders | crop: shorter side to image_size, centre cropped
        skip_unreadable_images=False,  # True: leave out rows whose image is missing or unreadable, and count them
        decode_workers=0,  # threads decoding images (0: one per core + 4)
        test_fraction=0.15,  # every category value is kept in the training part
        split_seed=0,
        max_device_latent_bytes=4 * 2**30,  # training latents up to this size on the device, larger: streamed from host
    ))
    config.first_stage.max_train_images = 4096  # a seeded sample of the training images bounds the memory it needs
    config.eval.paper_table = ""  # no published row to set a run of your own data beside
    # sample.py --refine: the prompt from the given conditions, fields in braces being condition names (e.g.
    # "a [{colour} ]{shape}, flat icon on white"; mcjax.generate.prompts). Empty: refining needs --prompt.
    config.refine.prompt_template = ""
    return config
