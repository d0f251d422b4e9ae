"""Where the cells run: here one after another, in a pool of local processes, or on a Ray cluster.

Every executor takes a function and a list of jobs and yields (job, result, error) as cells finish,
in any order; `error` is a message (with the traceback for unexpected failures) and a failed cell
does not stop the others. The driver alone writes results, so executors never touch the
experiment's bookkeeping.

Ray: each cell is a Ray task that asks for `job.processes` GPUs when the cluster has GPUs (one
CPU otherwise); the experiment folder and the datasets must be on storage every node sees (NFS,
a shared volume), and imgsteal must be installed on every node (`pip install imgsteal[ray]`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Protocol, Sequence

from imgsteal.errors import ImgstealError

Outcome = tuple[Any, Any, "str | None"]  # (job, result or None, error message or None)


def describe_error(exc: BaseException) -> str:
    """One line for expected failures (ImgstealError), the traceback for anything else."""
    if isinstance(exc, ImgstealError):
        return str(exc)
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()


class Executor(Protocol):
    name: str

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Cells one after another in this process (the default; progress bars stay visible)."""

    name = "local"
    parallel = False

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Outcome]:
        for job in jobs:
            try:
                result = fn(job)
            except Exception as exc:  # a failed cell is reported; the grid goes on
                yield job, None, describe_error(exc)
            else:
                yield job, result, None

    def close(self) -> None:
        pass


# -- process pool ------------------------------------------------------------------------------

def _init_worker(counter, gpus: list[int], threads: int) -> None:
    """Give each pool worker its own GPU (round robin) and a fair share of the CPU threads."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[index % len(gpus)])
    import torch

    torch.set_num_threads(threads)


def _call(fn_and_job: tuple[Callable[[Any], Any], Any]) -> tuple[Any, str | None]:
    fn, job = fn_and_job
    try:
        return fn(job), None
    except Exception as exc:
        return None, describe_error(exc)


class ProcessPoolCellExecutor:
    """`workers` processes on this machine (spawned, so CUDA is safe), each running one cell at a time."""

    name = "local"
    parallel = True

    def __init__(self, workers: int) -> None:
        if workers < 2:
            raise ValueError("a process pool needs at least 2 workers")
        self.workers = workers

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Outcome]:
        import torch

        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", 0)
        gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_init_worker,
                                 initargs=(counter, gpus, threads)) as pool:
            futures = {pool.submit(_call, (fn, job)): job for job in jobs}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = futures[future]
                    try:
                        result, error = future.result()
                    except Exception as exc:  # the worker process died (killed, out of memory)
                        result, error = None, describe_error(exc)
                    yield job, result, error

    def close(self) -> None:
        pass


# -- ray ---------------------------------------------------------------------------------------


def import_ray():
    try:
        import ray
    except ImportError:
        raise ImgstealError("--executor ray needs Ray: pip install 'imgsteal[ray]' (or pip install 'ray[default]')") from None
    return ray


class RayExecutor:
    """Cells as Ray tasks on the cluster at `address` (None: start a local Ray instance here).

    A task asks for job.processes GPUs when the cluster has GPUs, else one CPU; results come back to
    the driver through the object store.
    """

    name = "ray"
    parallel = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.ray = import_ray()
        self.started_here = address is None and not self.ray.is_initialized()
        # ray.init replaces the process's SIGTERM handler for good; close() puts the caller's back.
        in_main = threading.current_thread() is threading.main_thread()
        self.sigterm_before = signal.getsignal(signal.SIGTERM) if in_main else None
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address, "log_to_driver": True}
            if address is None:
                kwargs.update(include_dashboard=False, num_cpus=num_cpus)
            self.ray.init(**kwargs)
        self.gpus = float(self.ray.cluster_resources().get("GPU", 0))

    def resources(self, job: Any) -> dict[str, float]:
        """The Ray resources one cell asks for."""
        processes = getattr(job, "processes", 1)
        if self.gpus > 0:
            return {"num_gpus": float(processes), "num_cpus": 1.0}
        return {"num_gpus": 0.0, "num_cpus": 1.0}

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[Outcome]:
        ray = self.ray
        remote = ray.remote(fn)
        refs = {remote.options(**self.resources(job)).remote(job): job for job in jobs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            ref = done[0]
            job = refs.pop(ref)
            try:
                yield job, ray.get(ref), None
            except Exception as exc:  # RayTaskError wraps the cell's exception
                cause = getattr(exc, "cause", None)
                yield job, None, describe_error(cause if isinstance(cause, BaseException) else exc)

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
        if self.sigterm_before is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.sigterm_before)


def make_executor(name: str, workers: int = 1, ray_address: str | None = None) -> Executor:
    """local (workers == 1: in process, one cell after another; > 1: a process pool) or ray."""
    if name == "local":
        if ray_address:
            raise ImgstealError("--ray-address goes with --executor ray")
        return LocalExecutor() if workers <= 1 else ProcessPoolCellExecutor(workers)
    if name == "ray":
        return RayExecutor(ray_address, num_cpus=workers if workers > 1 else None)
    raise ImgstealError(f"--executor must be local or ray, not {name!r}")
