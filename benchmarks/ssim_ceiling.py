"""What a faithful conditional sampler can score on rendered GeoBiked, per image size: SSIM and MSE of real training
bikes with exactly a test row's conditions against that row's image.

    python benchmarks/ssim_ceiling.py                          # 64, 128, 256 and 512 px, ≈ 16 min on 2 CPU cores
    python benchmarks/ssim_ceiling.py --sizes 64 --rows 654    # the whole test split at 64 px

Bikes with identical conditions still differ in geometry (the keypoints are not conditions), so a sampler that draws
real-looking bikes for the given conditions scores about what a random one of them scores ("random", the mean over
all of them); "first" is the first such training bike. Uses the mcLDM config's split and test rows (the first
``--rows`` test rows, as its evaluation does) and mcjax's SSIM (README.md: the variant). Renders only the bikes needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHUNK = 32  # candidates scored per compiled call (one shape: no recompiling per row)


def identical_condition_rows(data, num_rows: int) -> list[tuple[int, list[int]]]:
    """(test table row, training table rows with exactly its conditions) for the first ``num_rows`` test rows that
    have any (``ldm_pipeline.condition_agreement``: a missing numerical value matches a missing one)."""
    from mcjax.eval.ldm import condition_agreement, conditions_on_host

    train = conditions_on_host(data.train_conditions)
    test = conditions_on_host(data.test_conditions, slice(num_rows))
    identical = condition_agreement(train, test) == train.cat_BxK.shape[1] + train.num_BxJ.shape[1]
    return [(int(data.test_rows[i]), data.train_rows[np.flatnonzero(row)].tolist())
            for i, row in enumerate(identical) if row.any()]


def scores_against(truth_HxWx3: np.ndarray, candidates_NxHxWx3: np.ndarray) -> dict[str, np.ndarray]:
    """``ldm_sampling.image_scores`` of every candidate against one image (uint8 inputs), in fixed-size chunks."""
    from mcjax.data.batching import fixed_size_batches
    from mcjax.eval.ldm import image_scores

    truth = np.repeat(truth_HxWx3[None], CHUNK, 0) / 255.0
    chunks = [(image_scores(batch / 255.0, truth), n) for batch, n in fixed_size_batches(candidates_NxHxWx3, CHUNK)]
    return {name: np.concatenate([scores[name][:n] for scores, n in chunks]) for name in ("ssim", "mse")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--rows", type=int, default=128, help="first test rows (the default evaluation's 128)")
    args = parser.parse_args()

    from mcjax.configs.geobiked_ldm import get_config

    from mcjax.data import render, tables

    config = get_config()
    raw = tables.table_from_config(config.data)
    data = tables.prepare_table(raw, config.data.test_fraction, config.data.split_seed)
    pairs = identical_condition_rows(data, args.rows)
    needed = sorted({t for t, _ in pairs} | {c for _, cs in pairs for c in cs})
    geometry = render.geometry_from_table(raw)
    subset = render.BikeGeometry(**{f.name: getattr(geometry, f.name)[needed] for f in dataclasses.fields(geometry)})
    position = {row: i for i, row in enumerate(needed)}
    print(f"{len(pairs)} of the first {args.rows} test rows have training bikes with identical conditions "
          f"({np.mean([len(c) for _, c in pairs]):.1f} each on average); {len(needed)} bikes rendered per size")
    print("  size   SSIM random   SSIM first   MSE random   MSE first")
    for size in args.sizes:
        images = render.render(subset, size)
        per_row = [scores_against(images[position[t]], images[[position[c] for c in cs]]) for t, cs in pairs]
        random_pick = {name: np.mean([np.mean(s[name]) for s in per_row]) for name in ("ssim", "mse")}
        first = {name: np.mean([s[name][0] for s in per_row]) for name in ("ssim", "mse")}
        print(f"{size:4d} px   {random_pick['ssim']:11.4f}   {first['ssim']:10.4f}   {random_pick['mse']:10.4f}   "
              f"{first['mse']:9.4f}", flush=True)


if __name__ == "__main__":
    main()
