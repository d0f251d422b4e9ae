"""One training loop for every network in the toolkit.

A `Recipe` owns the networks, optimizers and the loss of one step; `run_training` owns everything
around it: epochs (or an exact number of steps), deterministic batches, progress, metrics log, periodic atomic checkpoints, and
resuming a killed run at the exact step and epoch it stopped at. Checkpoints are copied to the CPU
at their step and written by a background thread; on a GPU the next batches are prepared in another.

Run directory layout:
    config.json          the resolved, typed config of the run
    checkpoints/last.*   full training state (weights, optimizers, RNG, position)
    model.safetensors    the trained generator alone, written when training completes
    metrics.jsonl        one JSON line per logged step
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from imgsteal.errors import ImgstealError
from imgsteal.train.checkpoint import (
    load_checkpoint, restore_training_state, save_checkpoint, snapshot_checkpoint, write_checkpoint,
)
from imgsteal.train.distributed import active_context


class BatchSource(Protocol):
    batches_per_epoch: int

    def batch(self, epoch: int, index: int) -> Any: ...


class Recipe(Protocol):
    """What a training method provides. `modules` and `optimizers` are saved and restored by name."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    export_module: str  # the network written to model.safetensors (the generator)

    def begin_epoch(self, epoch: int) -> None: ...

    # Optional: `begin_step(step)` is called before every step with the number of steps already done
    # (0-based global step), after begin_epoch; recipes with step-based phases or learning-rate
    # milestones use it (see train.srgan).

    def train_step(self, batch: Any) -> dict[str, float]: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainingResult:
    run_dir: Path
    model_path: Path
    steps: int
    epochs: int
    images_per_second: float
    resumed_from_step: int
    history: list[dict[str, float]] = field(default_factory=list)


def _archs(recipe: Recipe) -> dict[str, dict[str, Any]]:
    # build_model stamps each network with the spec that rebuilds it.
    return {name: getattr(m, "build_spec") for name, m in recipe.modules.items() if hasattr(m, "build_spec")}


def _prefetch_depth(recipe: Recipe) -> int:
    """Batches prepared ahead in a background thread: 2 when training on a GPU (the crops and
    augmentations on the CPU then overlap the GPU's step), 0 on the CPU, whose cores the step uses."""
    on_gpu = any(p.is_cuda for m in recipe.modules.values() for p in m.parameters())
    return 2 if on_gpu else 0


def _batches(source: BatchSource, positions: list[tuple[int, int]], ahead: int) -> Iterator[Any]:
    """source.batch(epoch, index) for each position in order, up to `ahead` of them computed in advance
    (in pinned memory, so the recipe's non-blocking copy to the GPU is asynchronous). Batches are a
    function of their position alone, so prefetching changes no result."""
    if ahead <= 0:
        yield from (source.batch(epoch, index) for epoch, index in positions)
        return

    def prepare(position: tuple[int, int]) -> Any:
        batch = source.batch(*position)
        pin = isinstance(batch, tuple) and torch.cuda.is_available()
        return tuple(t.pin_memory() for t in batch) if pin else batch

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches") as pool:
        pending = deque(pool.submit(prepare, position) for position in positions[:ahead])
        for position in positions[ahead:]:
            ready = pending.popleft().result()
            pending.append(pool.submit(prepare, position))
            yield ready
        while pending:
            yield pending.popleft().result()


class _BackgroundWriter:
    """Writes checkpoint snapshots in a background thread, one at a time, so training goes on while
    a file is written (on a GPU a paper-scale checkpoint is hundreds of MB: written in the loop, it
    stalled the GPU every `checkpoint_every` steps). A write error surfaces at the next checkpoint or
    at close(); close() waits, so a run that stops - even by an exception - leaves its last
    checkpoint complete on disk."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = None

    def submit(self, snapshot) -> None:
        self.wait()
        self._pending = self._pool.submit(write_checkpoint, snapshot)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def run_training(
    recipe: Recipe,
    source: BatchSource,
    *,
    run_dir: str | Path,
    epochs: int,
    steps: int | None = None,
    meta: dict[str, Any],
    resume: bool = False,
    checkpoint_every: int = 200,
    log_every: int = 10,
    progress: bool = True,
    description: str = "training",
    on_step: Callable[[int], None] | None = None,
) -> TrainingResult:
    """Train `recipe` for `epochs` epochs of `source.batches_per_epoch` steps each, or, when `steps`
    is given, for exactly `steps` optimisation steps (then `epochs` is ignored; the last epoch may
    stop part-way, and is checkpointed where it stopped).

    meta: JSON-able facts about the run (task, seed, config...) stored in every checkpoint.
    resume: continue from run_dir/checkpoints/last; without it an existing run is refused, never overwritten.
    checkpoint_every: steps between checkpoints (one is also written at every epoch end).
    on_step: called with the global step after each step (tests use it to interrupt a run).
    Under torchrun with an initialised process group (see train.distributed), the recipe's networks
    are wrapped in DistributedDataParallel, each rank trains on its slice of every batch, and only
    rank 0 writes; a single process trains exactly as without it.
    """
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.safetensors"
    if last.exists() and not resume:
        raise ImgstealError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another output folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    start_epoch, start_index, step = 0, 0, 0
    if resume and last.exists():
        position = restore_training_state(load_checkpoint(last), recipe.modules, recipe.optimizers)
        recipe.load_state(position.get("recipe", {}))
        start_epoch, start_index, step = position["epoch"], position["index"], position["step"]
    resumed_from = step
    distributed = active_context()  # None in a single process
    writes = distributed is None or distributed.is_main
    if distributed is not None:
        distributed.wrap_recipe(recipe)
        source = distributed.shard(source)
    per_epoch = source.batches_per_epoch
    if steps is not None:
        if steps < 1:
            raise ImgstealError(f"steps must be >= 1, got {steps}")
        total, epochs = steps, -(-steps // per_epoch)  # epochs begun, the last one possibly partial
    else:
        total = epochs * per_epoch
    begin_step = getattr(recipe, "begin_step", None)
    base_meta = {**meta, "archs": _archs(recipe), "epochs": epochs, "steps_per_epoch": per_epoch,
                 "total_steps": total, "export": recipe.export_module}

    writer = _BackgroundWriter()

    def checkpoint(epoch: int, index: int) -> None:
        if not writes:
            return
        position = {"epoch": epoch, "index": index, "step": step, "recipe": recipe.state()}
        writer.submit(snapshot_checkpoint(last, {**base_meta, "step": step, "epoch": epoch}, recipe.modules,
                                          recipe.optimizers, position))

    history: list[dict[str, float]] = []
    images = 0
    started = time.perf_counter()
    with contextlib.closing(writer), (open(run_dir / "metrics.jsonl", "a") if writes else contextlib.nullcontext()) as log, tqdm(
        total=total, initial=step, desc=description, disable=not progress or not writes, unit="step", dynamic_ncols=True
    ) as bar:
        positions = [(e, i) for e in range(start_epoch, epochs) for i in range(start_index if e == start_epoch else 0, per_epoch)]
        positions = positions[: max(0, total - step)]
        with contextlib.closing(_batches(source, positions, ahead=_prefetch_depth(recipe))) as batches:
            for (epoch, index), batch in zip(positions, batches):
                if index == 0 or (epoch, index) == positions[0]:
                    recipe.begin_epoch(epoch)
                if begin_step is not None:
                    begin_step(step)
                losses = recipe.train_step(batch)
                step += 1
                images += len(batch[0]) * (distributed.world_size if distributed else 1)
                bar.update(1)
                if step % log_every == 0 or step == total:
                    row = {"step": step, "epoch": epoch, **{k: round(float(v), 6) for k, v in losses.items()}}
                    history.append(row)
                    if log is not None:
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                    bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
                if checkpoint_every and step % checkpoint_every == 0 and index + 1 < per_epoch:
                    checkpoint(epoch, index + 1)
                if on_step is not None:
                    on_step(step)
                if index + 1 == per_epoch:
                    checkpoint(epoch + 1, 0)
                elif step == total:  # a step-length run that ends inside an epoch
                    checkpoint(epoch, index + 1)
    elapsed = time.perf_counter() - started
    if distributed is not None:
        distributed.sync_buffers(recipe)
    model_path = run_dir / "model.safetensors"
    if writes:
        model_path = save_checkpoint(
            model_path,
            {**base_meta, "step": step, "epoch": epochs},
            {recipe.export_module: recipe.modules[recipe.export_module]},
        )
    if distributed is not None:
        distributed.barrier()  # every rank returns once rank 0 has written the model
    return TrainingResult(
        run_dir=run_dir,
        model_path=model_path,
        steps=step,
        epochs=epochs,
        images_per_second=images / elapsed if elapsed > 0 and images else 0.0,
        resumed_from_step=resumed_from,
        history=history,
    )
