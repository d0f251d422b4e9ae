"""Training length in steps, independent of the number of pairs (compute-matched grid cells).

`StepSource` presents any deterministic batch source as epochs of a chosen length: its global batch
g is the wrapped source's batch (g // n, g % n), n = the wrapped source's batches per epoch, so the
batches are exactly those the wrapped source would give, in order, whatever the epoch length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_EPOCH_STEPS = 100


def epoch_length(steps: int, natural: int, target: int = DEFAULT_EPOCH_STEPS) -> int:
    """Steps per (bookkeeping) epoch for a run of `steps` steps over data that gives `natural` steps
    per epoch: the natural length when it is at least `target`, else `target` (at most `steps`), so a
    run on one pair does not end an epoch - and write a checkpoint - at every step."""
    if steps < 1 or natural < 1:
        raise ValueError(f"steps and steps per epoch must be >= 1, got {steps} and {natural}")
    return natural if natural >= target else min(steps, target)


def epochs_for(steps: int, per_epoch: int) -> int:
    """Epochs of `per_epoch` steps that hold `steps` steps (the last one may be cut short)."""
    return -(-steps // per_epoch)


def batch_at(source: Any, step: int) -> Any:
    """The batch of `source` (a BatchSource) at global step `step`, reading it epoch after epoch."""
    n = source.batches_per_epoch
    return source.batch(step // n, step % n)


@dataclass
class StepSource:
    """`source` re-cut into epochs of `steps_per_epoch` batches (see the module docstring)."""

    source: Any
    steps_per_epoch: int

    @property
    def batches_per_epoch(self) -> int:
        return self.steps_per_epoch

    def batch(self, epoch: int, index: int) -> Any:
        return batch_at(self.source, epoch * self.steps_per_epoch + index)
