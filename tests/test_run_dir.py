"""The run directory: the same-run check, configs of older workdirs, and the inference bundle."""

import json
import os

import ml_collections
import numpy as np
import pytest

from mcjax import run_dir


def _config(**train):
    return ml_collections.ConfigDict({"job": "mcvae", "model": {"latent_dim": 4},
                                      "train": {"epochs": 3, "progress": True, **train}})


def test_a_workdir_refuses_another_run_but_not_changed_resumable_fields(tmp_path):
    run_dir.start(str(tmp_path), _config(), stats_json="{}")
    run_dir.start(str(tmp_path), _config(progress=False))  # progress may change between a run and its resumption
    with pytest.raises(ValueError, match="different config \\(train.epochs\\)"):
        run_dir.start(str(tmp_path), _config(epochs=4))
    assert json.loads((tmp_path / "config.json").read_text())["train"]["progress"] is False


def test_configs_of_older_workdirs_read_in_todays_names():
    old_ldm = {"model_type": "ldm", "vae": {"pretrained": "/sd/vae"}, "autoencoder": {"steps": 0}, "train": {}}
    assert run_dir.upgrade_config(old_ldm) == {"job": "ldm", "first_stage": {
        "pretrained": "/sd/vae", "steps": 0, "max_train_images": 0}, "train": {"sparsity_target": "observed"}}
    assert run_dir.upgrade_config({"train": {}})["job"] == "mcvae"  # mcVAE configs had no model_type
    assert run_dir.upgrade_config({"search": {}, "model_type": "vae"})["job"] == "search"
    assert run_dir.upgrade_config({"model_type": "autoencoder"})["job"] == "first_stage"
    assert run_dir.upgrade_config({"job": "ldm", "model": {"base_channels": 8}})["model"] == {
        "base_channels": 8, "layout": "mcjax"}  # the one U-Net layout of mcjax 0.2


@pytest.mark.parametrize("name,preset", [("geobiked_vae", "generator"), ("geobiked_ldm", "default"),
                                         ("geobiked_first_stage", "default"), ("geobiked_vae_search", "")])
def test_a_workdir_of_mcjax_0_2_resumes_with_todays_config(tmp_path, name, preset):
    """A config stored before the fields of missing labels, image folders and U-Net layouts existed is today's."""
    import importlib

    module = importlib.import_module(f"mcjax.configs.{name}")
    config = module.get_config(preset) if preset else module.get_config()
    stored = json.loads(config.to_json())
    for block, fields in (("data", ("categorical_na_values", "image_column", "image_fit", "skip_unreadable_images",
                                    "decode_workers", "max_device_latent_bytes")),
                          ("train", ("sparsity_target",)), ("model", ("layout",)),
                          ("first_stage", ("max_train_images",)), ("search", ("storage", "study_name", "heartbeat_s"))):
        for field in fields:
            stored.get(block, {}).pop(field, None)
    for block in ("judge", "refine"):  # blocks that only score or refine a run
        stored.pop(block, None)
    if "index_column" in stored["data"]:
        stored["data"]["index_column"] = ""  # 0.2's default; unused with rendered images
    (tmp_path / run_dir.CONFIG).write_text(json.dumps(stored))
    run_dir.check_same_run(str(tmp_path), config)


def test_bundle_round_trip(tmp_path):
    weights = {"params": {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
                                    "bias": np.zeros(3, np.float32)}},
               "batch_stats": {"norm": {"mean": np.ones(2, np.float32)}}}
    assert not run_dir.has_bundle(str(tmp_path))
    run_dir.write_bundle(str(tmp_path), "ldm", {"latent_shape": [4, 4, 4]}, {"unet": weights}, _config(), "{}")
    bundle = run_dir.read_bundle(str(tmp_path), "ldm")
    assert bundle.manifest == {"format": run_dir.BUNDLE_FORMAT, "job": "ldm", "latent_shape": [4, 4, 4]}
    assert bundle.config.train.epochs == 3 and bundle.stats_json == "{}"
    loaded = bundle.weights("unet")
    np.testing.assert_array_equal(loaded["params"]["dense"]["kernel"], weights["params"]["dense"]["kernel"])
    assert loaded["batch_stats"]["norm"]["mean"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="holds a 'ldm' run, not 'mcvae'"):
        run_dir.read_bundle(str(tmp_path), "mcvae")
    # Written again (a resumed run): replaced whole, no temporary directory left behind.
    run_dir.write_bundle(str(tmp_path), "ldm", {"latent_shape": [8, 8, 4]}, {"unet": weights}, _config(), "{}")
    assert run_dir.read_bundle(str(tmp_path)).manifest["latent_shape"] == [8, 8, 4]
    assert sorted(os.listdir(tmp_path)) == ["inference"]


def test_an_incomplete_bundle_is_not_trusted(tmp_path):
    (tmp_path / "inference").mkdir()  # a bundle directory without its manifest (written last)
    with pytest.raises(FileNotFoundError, match="finished training run"):
        run_dir.read_bundle(str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="export_run"):
        run_dir.read_bundle(str(tmp_path))
    (tmp_path / "inference" / "manifest.json").write_text(json.dumps({"format": 99, "job": "ldm"}))
    with pytest.raises(ValueError, match="bundle format 99"):
        run_dir.read_bundle(str(tmp_path))
