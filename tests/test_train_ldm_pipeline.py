"""The mcLDM pipeline of train.py (images → autoencoder → latents → U-Net → eval.json) and sample.py, tiny."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from mcjax.configs.geobiked_ldm import get_config

from mcjax.conditions import Conditions
from mcjax.data import tables
from mcjax.data.images import load_images
from mcjax.errors import InputError
from mcjax.eval import ldm as eval_ldm
from mcjax.generate.ldm import load_ldm_run
from mcjax.models.ldm import SamplerSettings
from mcjax.train import first_stage, ldm, ldm_pipeline
from mcjax.train.latents import precompute_latents
from tests.test_data_images import shapes_config, write_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke preset shrunk further: 16 px images, 4 × 4 latents, a few steps of everything.
TINY = {"data.image_size": 16, "first_stage.steps": 10, "first_stage.batch_size": 8, "train.steps": 4,
        "train.batch_size": 8, "train.checkpoint_every_steps": 2, "train.log_every_steps": 2,
        "train.progress": False, "train.tensorboard": False, "eval.num_rows": 4, "eval.inference_sparsity": (0.0, 0.9),
        "eval.num_steps": 2, "eval.batch_size": 4, "eval.grid_rows": 2, "eval.every_steps": 2, "eval.fd_num_rows": 8,
        "judge.steps": 10}


def tiny_config(cache_dir: str):
    config = get_config("smoke")
    for path, value in TINY.items():
        block, name = path.split(".")
        config[block][name] = value
    config.data.render_cache_dir = os.path.join(cache_dir, "renders")
    config.compilation_cache_dir = os.path.join(cache_dir, "xla")
    return config


def _flags(config) -> list[str]:
    return [f"--config.{path}={value}" for path, value in TINY.items()] + [
        f"--config.data.render_cache_dir={config.data.render_cache_dir}",
        f"--config.compilation_cache_dir={config.compilation_cache_dir}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    workdir = str(tmp_path_factory.mktemp("ldm") / "run")
    config = tiny_config(cache)
    summary = ldm_pipeline.train_ldm(config, workdir)
    return config, workdir, summary


def test_pipeline_writes_every_artefact(trained):
    config, workdir, summary = trained
    assert summary["inference_sparsity"] == [0.0, 0.9]
    for name in ("mse", "ssim", "psnr"):
        assert len(summary[name]) == 2 and np.all(np.isfinite(summary[name])), name
    stored = json.loads(open(os.path.join(workdir, "eval.json")).read())
    assert stored["ssim"] == summary["ssim"] and 0.0 < stored["retrieval_baseline"]["ssim"] < 1.0
    # The condition judge's entries, per level; the FD only at the smoke preset's fd_sparsity (0.0), on 8 rows.
    for name in ("condition_accuracy", "condition_accuracy_real", "accuracy_per_condition", "numerical_error",
                 "fd", "fd_num_images"):
        assert len(stored[name]) == 2, name
    assert all(0.0 <= stored[name][i] <= 1.0 for name in ("condition_accuracy", "condition_accuracy_real")
               for i in range(2))
    assert set(stored["accuracy_per_condition"][0]) == set(data_columns := config.data.categorical_columns)
    assert set(stored["numerical_error"][0]) == set(config.data.numerical_columns)
    assert stored["fd"][0] >= 0.0 and stored["fd"][1] is None
    assert stored["fd_num_images"] == [8, None] and stored["fd_small_sample"] == [True, None]
    assert stored["fd_reference"]["fd_num_images"] == 8 and len(data_columns) == 7
    curve = [json.loads(line) for line in open(os.path.join(workdir, "eval_curve.jsonl"))]
    assert all(len(point["condition_accuracy"]) == 2 for point in curve)
    assert all(set(point["accuracy_per_condition"][0]) == set(data_columns) for point in curve)
    assert "lpips" not in stored and "clip_similarity" not in stored  # no weight files named: left out
    assert "paper, Table 4 (geobiked)" in open(os.path.join(workdir, "results.md")).read()
    for name in ("config.json", "stats.json", "metrics.jsonl", "eval.png", "eval_control.png", "judge/report.json",
                 "judge/judge.safetensors", "autoencoder/config.json",
                 "autoencoder/diffusion_pytorch_model.safetensors", "checkpoints/2", "checkpoints/4"):
        assert os.path.exists(os.path.join(workdir, name)), name
    # The curve's last point scores the same weights, rows, masks and noise as eval.json.
    curve = [json.loads(line) for line in open(os.path.join(workdir, "eval_curve.jsonl"))]
    assert [point["step"] for point in curve] == [2, 4] and curve[-1]["inference_sparsity"] == [0.0, 0.9]
    np.testing.assert_allclose(curve[-1]["ssim"], summary["ssim"], rtol=1e-6)
    # The latent scale is measured on the training images: their latents have unit variance.
    data = load_images(config.data).table
    latents = np.load(os.path.join(workdir, "latents.npy"))
    assert latents.shape == (4355, 4, 4, 4)
    assert abs(float(np.std(latents[data.train_rows])) - 1.0) < 1e-3


def test_rerun_resumes_exactly_and_skips_finished_stages(trained, capsys):
    config, workdir, _ = trained
    finished = load_ldm_run(workdir).ldm.unet_variables
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))  # as if stopped after the checkpoint at step 2
    ldm_pipeline.train_ldm(config, workdir)
    out = capsys.readouterr().out
    assert "autoencoder" not in out.split("U-Net")[0] and "from step 2 to 4" in out
    assert "training the condition judge" not in out  # W/judge/key matches: the judge is reused
    resumed = load_ldm_run(workdir).ldm.unet_variables
    curve = [json.loads(line) for line in open(os.path.join(workdir, "eval_curve.jsonl"))]
    assert [point["step"] for point in curve] == [2, 4, 4] and curve[1] == curve[2]
    for a, b in zip(jax.tree.leaves(finished), jax.tree.leaves(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_a_level_scores_the_same_whichever_levels_come_with_it(trained):
    config, workdir, summary = trained
    run = load_ldm_run(workdir)
    images = load_images(config.data)
    alone, _, _ = eval_ldm.evaluate_test_rows(config, run.ldm, images, (0.9,))
    assert alone["ssim"] == summary["ssim"][1:] and alone["mse"] == summary["mse"][1:]


def test_the_guidance_sweep_scores_each_scale_on_the_evaluations_rows(trained):
    config, workdir, summary = trained
    run = load_ldm_run(workdir)
    config = config.copy_and_resolve_references()
    config.eval.guidance_sweep_sparsity = (0.0, 0.9)
    rows = eval_ldm.guidance_sweep(config, run.ldm, load_images(config.data), None, (1.0, 2.0))
    assert [(r["guidance_scale"], r["inference_sparsity"]) for r in rows] == [(1.0, 0.0), (1.0, 0.9), (2.0, 0.0),
                                                                              (2.0, 0.9)]
    assert [r["ssim"] for r in rows[:2]] == summary["ssim"] and rows[2]["ssim"] != rows[0]["ssim"]


def test_last_curve_point_is_read_from_the_final_evaluation(tmp_path, monkeypatch):
    config = tiny_config(str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(eval_ldm, "evaluate_test_rows",
                        lambda config, trained, images, levels, judging=None: calls.append(levels) or (
                            {"inference_sparsity": list(levels), "mse": [0.1] * len(levels),
                             "ssim": [0.5] * len(levels), "psnr": [10.0] * len(levels)}, None, None))
    curve = eval_ldm.TrainingCurve(config, str(tmp_path), lambda state: None, images=None)
    curve.at_milestone(2, state=None)
    curve.at_milestone(4, state=None)  # the last step: left to the final evaluation
    assert calls == [(0.0, 0.9)]
    curve.after_evaluation({"inference_sparsity": [0.0, 0.5, 0.9], "mse": [1.0, 2.0, 3.0], "ssim": [0.7, 0.6, 0.4],
                            "psnr": [20.0, 15.0, 12.0]})
    curve.after_evaluation({"inference_sparsity": [0.9], "mse": [9.0], "ssim": [9.0], "psnr": [9.0]})  # no-op now
    lines = [json.loads(line) for line in open(tmp_path / "eval_curve.jsonl")]
    assert lines[1] == {"step": 4, "inference_sparsity": [0.0, 0.9], "mse": [1.0, 3.0], "ssim": [0.7, 0.4],
                        "psnr": [20.0, 12.0]}
    assert len(lines) == 2
    config.eval.inference_sparsity = (0.0, 0.5)  # 0.9 is not evaluated at the end: the milestone scores it
    curve = eval_ldm.TrainingCurve(config, str(tmp_path), lambda state: None, images=None)
    curve.at_milestone(4, state=None)
    assert calls == [(0.0, 0.9), (0.0, 0.9)]


def test_workdir_of_another_config_is_refused(trained):
    config, workdir, _ = trained
    config = config.copy_and_resolve_references()
    config.train.learning_rate = 0.5
    with pytest.raises(ValueError, match="train.learning_rate"):
        ldm_pipeline.train_ldm(config, workdir)


@pytest.mark.slow  # ≈ 35 s: a second pipeline run
def test_pretrained_first_stage_is_used_as_is(trained, tmp_path):
    config, workdir, _ = trained
    config = config.copy_and_resolve_references()
    config.first_stage.pretrained = os.path.join(workdir, "autoencoder")
    config.eval.inference_sparsity = (0.5,)
    ldm_pipeline.train_ldm(config, str(tmp_path))
    assert not (tmp_path / "autoencoder").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "latents.npy"), np.load(os.path.join(workdir, "latents.npy")))


def test_loss_weighting_from_the_config(tmp_path):
    config = tiny_config(str(tmp_path / "cache"))
    model = None  # the network plays no part here
    assert get_config("paper").diffusion.loss_weighting == "uniform"  # the paper's loss
    config.diffusion.loss_weighting = "uniform"
    assert ldm.make_trainer(config, model).loss_weights is None
    config.diffusion.loss_weighting = "min_snr"
    assert ldm.make_trainer(config, model).loss_weights.shape == (config.diffusion.num_timesteps,)
    config.diffusion.loss_weighting = "snr"
    with pytest.raises(ValueError, match="Unknown loss weighting 'snr'"):
        ldm.make_trainer(config, model)
    del config.diffusion["loss_weighting"], config.diffusion["min_snr_gamma"]  # a run saved before these existed
    assert ldm.make_trainer(config, model).loss_weights is None


def test_missing_first_stage_is_a_clear_error(tmp_path):
    config = tiny_config(str(tmp_path / "cache"))
    config.first_stage.steps = 0
    with pytest.raises(ValueError, match="first_stage.pretrained"):
        ldm_pipeline.train_ldm(config, str(tmp_path / "run"))


def test_real_images_are_read_from_a_folder_in_table_order(tmp_path):
    from PIL import Image

    config = tiny_config(str(tmp_path / "cache"))
    assert config.data.index_column == "Bike index"  # the real GeoBiked images are named by it: 17.png
    indices = [int(v) for v in tables.read_csv_columns(config.data.csv_path)["Bike index"]]
    for row, index in enumerate(indices):  # the colour encodes the table row
        Image.new("RGB", (16, 16), (row % 256, row // 256, 0)).save(tmp_path / f"{index}.png")
    config.data.image_dir = str(tmp_path)
    images = load_images(config.data).images_NxHxWx3
    assert images.shape == (len(indices), 16, 16, 3)
    picked = images[np.arange(0, len(indices), 97)]
    rows = picked[:, 8, 8, 0].astype(int) + 256 * picked[:, 8, 8, 1].astype(int)
    np.testing.assert_array_equal(rows, np.arange(0, len(indices), 97))
    (tmp_path / f"{indices[7]}.png").unlink()
    with pytest.raises(InputError, match=f"{indices[7]}.png \\(table row 7\\): no such file"):
        load_images(config.data)
    config.data.index_column = "Bike number"
    with pytest.raises(ValueError, match="index_column 'Bike number'"):
        load_images(config.data)


def test_latents_are_cached_by_what_they_were_made_from(tmp_path, monkeypatch):
    from PIL import Image

    from mcjax.models.autoencoder_kl import AutoencoderKL, init_variables
    from mcjax.models.autoencoder_kl_weights import save_pretrained

    config = shapes_config(tmp_path / "images", write_shapes(tmp_path / "images", 12))
    workdir = tmp_path / "run"
    module = AutoencoderKL(first_stage.architecture(config))
    variables = init_variables(module, jax.random.key(0))
    save_pretrained(module.config, variables, str(workdir / "autoencoder"))
    encoded = []
    monkeypatch.setattr(first_stage, "precompute_latents",
                        lambda *args, **kwargs: encoded.append(1) or precompute_latents(*args, **kwargs))
    latents_for = lambda: first_stage.latents_for(  # noqa: E731
        config, str(workdir), module, variables, load_images(config.data).images_NxHxWx3)
    first = np.array(latents_for())
    assert first.shape == (12, 4, 4, 4) and isinstance(latents_for(), np.memmap) and len(encoded) == 1
    os.remove(workdir / "latents.key")  # as if the run stopped after writing latents.npy
    np.testing.assert_array_equal(latents_for(), first)
    assert len(encoded) == 2
    Image.new("RGB", (20, 20), (0, 0, 0)).save(tmp_path / "images" / "a" / "img_0.png")  # a changed image
    changed = np.array(latents_for())
    assert len(encoded) == 3 and not np.allclose(changed[0], first[0])
    np.testing.assert_array_equal(changed[1:], first[1:])
    assert sorted(os.listdir(workdir)) == ["autoencoder", "latents.key", "latents.npy"]  # no temporary left


def test_the_first_stage_trains_on_a_bounded_seeded_sample_of_training_rows():
    config = get_config("smoke")
    train_rows = np.arange(0, 300, 3)
    assert first_stage.training_sample(config, train_rows) is train_rows  # no bound in the GeoBiked configs
    config.first_stage.max_train_images = 10
    sample = first_stage.training_sample(config, train_rows)
    assert len(sample) == 10 and set(sample) <= set(train_rows) and np.all(np.diff(sample) > 0)
    np.testing.assert_array_equal(first_stage.training_sample(config, train_rows), sample)

def test_training_latents_beyond_the_device_bound_are_streamed(tmp_path, capsys):
    config = get_config("smoke")
    np.save(tmp_path / "latents.npy", np.arange(10 * 64, dtype=np.float32).reshape(10, 4, 4, 4))
    latents = np.load(tmp_path / "latents.npy", mmap_mode="r")
    conditions = Conditions(np.zeros((6, 2), np.int32), np.zeros((6, 1), np.float32))
    config.data.max_device_latent_bytes = 5 * 256
    take = lambda n: jax.tree.map(lambda a: a[:n], conditions)  # noqa: E731
    resident = ldm_pipeline.training_latents(config, latents, np.arange(5), take(5))
    assert isinstance(resident, ldm.LDMData) and isinstance(resident.x0_NxHxWxC, jax.Array)
    np.testing.assert_array_equal(resident.x0_NxHxWxC, latents[:5])
    assert "streamed" not in capsys.readouterr().out
    streamed = ldm_pipeline.training_latents(config, latents, np.arange(6), conditions)
    assert isinstance(streamed, ldm.StreamedData) and streamed.x0_NxHxWxC is latents  # the memory map, no copy
    assert "streamed from the host" in capsys.readouterr().out


def test_most_similar_training_rows_counts_agreeing_conditions():
    nan = float("nan")
    train = Conditions(np.array([[1, 2], [1, 3], [2, 3]], np.int32), np.array([[0.5], [nan], [nan]], np.float32))
    test = Conditions(np.array([[1, 3], [2, 2]], np.int32), np.array([[nan], [0.5]], np.float32))
    best, agree = eval_ldm.most_similar_training_rows(train, test)
    np.testing.assert_array_equal(best, [1, 0])  # row 1 agrees on all three (missing = missing)
    np.testing.assert_array_equal(agree, [3, 2])


@pytest.mark.parametrize("settings,message", [
    (SamplerSettings(sampler="euler"), "Unknown sampler"),
    (SamplerSettings(guidance_scale=-1.0), "guidance scale"),
    (SamplerSettings(eta=2.0), "eta"),
])
def test_bad_sampler_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        settings.validated()


def _run(script, *args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_cli_resumes_a_finished_run_and_samples_images(trained, tmp_path):
    config, workdir, _ = trained
    result = _run("train.py", "--config", "configs/geobiked_ldm.py:smoke", "--workdir", workdir, *_flags(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "inference sparsity" in result.stdout and "U-Net (" not in result.stdout  # nothing left to train
    result = _run("sample.py", "--workdir", workdir, "--condition", "BikeStyle=BMX", "--num_samples", "3",
                  "--num_steps", "2", "--guidance_scale", "2", "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["sample_000.png", "sample_001.png", "sample_002.png", "samples.png"]


def test_a_bad_image_table_is_one_line_from_the_cli(tmp_path):
    csv_path = write_shapes(tmp_path, 12)
    rows = open(csv_path).read().splitlines()
    rows[4] = "../outside.png" + rows[4][rows[4].index(","):]
    open(csv_path, "w").write("\n".join(rows) + "\n")
    result = _run("train.py", "--config", "configs/image_folder_ldm.py:smoke", "--workdir", str(tmp_path / "run"),
                  f"--config.data.image_dir={tmp_path}", f"--config.data.csv_path={csv_path}",
                  "--config.data.image_column=file", "--config.data.categorical_columns=('digit',)")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-3000:]
    assert result.stderr.startswith("error: Column 'file', row 3: image path '../outside.png' leads out of")

@pytest.mark.slow  # about 100 s on 2 cores: two processes compile the whole pipeline
def test_an_image_folder_trains_and_samples_by_config_alone(tmp_path):
    """configs/image_folder_ldm.py on a folder of shapes in nested subfolders and mixed formats, from the CLI."""
    csv_path = write_shapes(tmp_path / "images", 40)
    workdir = str(tmp_path / "run")
    flags = [f"--config.{path}={value}" for path, value in TINY.items()] + [
        f"--config.data.image_dir={tmp_path / 'images'}", f"--config.data.csv_path={csv_path}",
        "--config.data.image_column=file", "--config.data.categorical_columns=('digit', 'colour')",
        "--config.data.numerical_columns=('size',)", "--config.data.numerical_na_values=(-1.0,)",
        f"--config.compilation_cache_dir={tmp_path / 'xla'}"]
    result = _run("train.py", "--config", "configs/image_folder_ldm.py:smoke", "--workdir", workdir, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "inference sparsity" in result.stdout
    summary = json.loads(open(os.path.join(workdir, "eval.json")).read())
    assert np.all(np.isfinite(summary["ssim"]))
    result = _run("sample.py", "--workdir", workdir, "--condition", "digit=3", "--condition", "size=12",
                  "--num_samples", "2", "--num_steps", "2", "--output_dir", str(tmp_path / "samples"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "samples")) == ["sample_000.png", "sample_001.png", "samples.png"]
