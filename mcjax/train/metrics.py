"""Metrics as JSON lines plus TensorBoard scalars (event files written directly), and a text progress bar."""

from __future__ import annotations

import json
import math
import os
import sys
import time

from mcjax.train.event_file import EventFileWriter


class MetricWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` (every run of a sweep) and writes TensorBoard scalars
    (one curve per metric; for a sweep, the mean over its runs)."""

    def __init__(self, workdir: str, tensorboard: bool = True):
        os.makedirs(workdir, exist_ok=True)
        self._workdir, self._wants_tensorboard = workdir, tensorboard
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        self._tensorboard = None

    def _open_tensorboard(self) -> None:
        if self._wants_tensorboard and self._tensorboard is None:
            self._tensorboard = EventFileWriter(os.path.join(self._workdir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, float], **labels) -> None:
        """One JSON line: the step, the labels (e.g. ``run``) and the scalars."""
        record = {"step": int(step), **labels, **{k: _json_number(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()  # readable while training runs, and kept if it is killed

    def summarise(self, step: int, scalars: dict[str, float]) -> None:
        """TensorBoard scalars (a no-op when TensorBoard is off)."""
        self._open_tensorboard()
        if self._tensorboard is not None:
            self._tensorboard.add_scalars(step, scalars)

    def close(self) -> None:
        self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _json_number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class ProgressBar:
    """A one-line progress bar on stderr, updated between compiled chunks (never per step); with ``total`` None it
    counts only, and ``finish`` ends its line."""

    def __init__(self, total: int | None, label: str = "train", enabled: bool = True, width: int = 30):
        self.total = None if total is None else max(int(total), 1)
        self.label, self.enabled, self.width = label, enabled, width
        self.start = time.perf_counter()

    def update(self, done: int, message: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        if self.total is None:
            sys.stderr.write(f"\r{self.label} {done} {elapsed:6.1f}s {message}")
        else:
            filled = int(round(min(done / self.total, 1.0) * self.width))
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                             f"{elapsed:6.1f}s {message}")
            if done >= self.total:
                sys.stderr.write("\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.total is None:
            sys.stderr.write("\n")
            sys.stderr.flush()
