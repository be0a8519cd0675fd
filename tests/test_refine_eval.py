"""Scoring refined mcLDM test images beside the raw ones (mcjax.generate.refine_eval, sample.py --evaluate)."""

import json
import os

import numpy as np
import pytest

from mcjax import run_dir
from mcjax.conditions import Conditions
from mcjax.data.images import load_images
from mcjax.generate import prompts, refine, refine_eval
from mcjax.generate.ldm import load_ldm_run
from mcjax.train.judge import condition_judge
from tests.test_refine import _sample, tiny_ldm_workdir, tiny_sdxl_refiner


def test_each_row_is_prompted_with_the_conditions_it_was_given():
    from mcjax.conditions import ConditionSpec

    spec = ConditionSpec(("BikeStyle",), (("BMX", "ROAD"),), ("Teeth on chainring",), (20.0,), (60.0,))
    given = Conditions(np.array([[1], [0], [2]]), np.array([[0.5], [np.nan], [1.0]], np.float32))
    assert [spec.given_values(given, row) for row in range(3)] == [
        {"BikeStyle": "BMX", "Teeth on chainring": 40.0}, {}, {"BikeStyle": "ROAD", "Teeth on chainring": 60.0}]
    template = "a [{BikeStyle} ]bicycle, {Teeth on chainring} teeth"
    assert refine_eval.row_prompts(template, spec, given) == ["a BMX bicycle, 40 teeth", "a bicycle",
                                                              "a ROAD bicycle, 60 teeth"]


@pytest.mark.slow  # ≈ 40 s on 2 cores: a judge, JAX sampling and a tiny SDXL refiner
def test_refined_test_images_are_scored_beside_the_raw_ones(tmp_path):
    pytest.importorskip("diffusers")
    workdir = tiny_ldm_workdir(str(tmp_path / "run"))
    config = run_dir.read_bundle(workdir, "ldm").config
    config.judge.update(dict(steps=20, batch_size=16))
    condition_judge(config, workdir, load_images(config.data))  # W/judge, as training leaves it
    run = load_ldm_run(workdir)
    template = prompts.config_template(config)
    plan = refine.plan("sdxl", tiny_sdxl_refiner(str(tmp_path / "sdxl")), template, num_steps=2, size=32)
    summary = refine_eval.evaluate_refined(workdir, run, plan, template, 0.0, 4)
    stored = json.loads(open(os.path.join(workdir, refine_eval.RESULTS)).read())
    assert stored["num_rows"] == 4 and len(stored["prompts"]) == 4 and stored["prompts"] == summary["prompts"]
    assert all(p.startswith("a ") and "bicycle" in p for p in stored["prompts"])
    for images in ("raw", "refined"):
        assert {"mse", "ssim", "condition_accuracy", "condition_accuracy_real"} <= set(stored[images])
        assert "lpips" not in stored[images]  # no weights named
    assert stored["raw"]["condition_accuracy_real"] == stored["refined"]["condition_accuracy_real"]
    assert stored["raw"]["ssim"] != stored["refined"]["ssim"]
    assert "## Refined images" in open(os.path.join(workdir, "results.md")).read()
    assert os.path.exists(os.path.join(workdir, refine_eval.GRID))


def test_evaluate_without_a_refiner_is_one_line(tmp_path):
    workdir = tiny_ldm_workdir(str(tmp_path / "run"))
    result = _sample("--workdir", workdir, "--evaluate")
    assert result.returncode == 2 and result.stderr.startswith("error: --evaluate scores refined test images")
