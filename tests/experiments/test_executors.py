"""Running cells elsewhere: a local process pool, a local Ray instance, and torchrun for one cell."""

import csv
import json
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imgsteal.pipeline.stage import stage_state

from imgsteal.experiments.config import ExperimentConfig
from imgsteal.experiments.executors import LocalExecutor, ProcessPoolCellExecutor, make_executor
from imgsteal.experiments.runner import run_experiment
from imgsteal_testkit import square_or_fail


@pytest.mark.slow  # about 10 s or more on the busy 2-core box: two spawned workers import torch; the fast loop keeps the worker-resolution test below
def test_local_and_pool_executors_report_results_and_failures():
    jobs = [1, 2, 3]
    local = {job: (result, error) for job, result, error in LocalExecutor().run(square_or_fail, jobs)}
    assert local[1] == (1, None) and local[2] == (4, None)
    assert local[3][0] is None and "three is not allowed" in local[3][1]
    pool = {job: (result, error) for job, result, error in ProcessPoolCellExecutor(2).run(square_or_fail, jobs)}
    assert pool[2] == (4, None) and "three is not allowed" in pool[3][1]
    with pytest.raises(Exception, match="--executor must be local or ray"):
        make_executor("slurm")


def test_worker_functions_resolve_beside_an_installed_top_level_tests_package(tmp_path):
    """Spawned workers find a job function by its module's name. torch-fidelity installs a top-level
    `tests` package; a function defined in a test module (named tests.experiments...) then fails to
    load in the worker. The job functions live in imgsteal_testkit, which resolves anyway."""
    fake = tmp_path / "site" / "tests"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    tests_dir = Path(__file__).resolve().parents[1]
    script = (f"import pickle, sys; sys.path[:0] = [{str(fake.parent)!r}, {str(tests_dir)!r}]; "
              "fn = pickle.loads(sys.stdin.buffer.read()); print(fn(4))")
    proc = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(square_or_fail),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "16"
    # and the failure this guards against, shown with a function pickled under a tests.* name
    probe = subprocess.run([sys.executable, "-c", script], input=b"ctests.experiments.test_executors\nsquare_or_fail\n.",
                           capture_output=True, timeout=60)
    assert probe.returncode != 0 and b"tests.experiments" in probe.stderr


@pytest.mark.slow
def test_two_tiny_cells_on_a_local_ray_instance(tiny_sr, tmp_path):
    ray = pytest.importorskip("ray")
    cfg = ExperimentConfig.model_validate(tiny_sr())
    out = tmp_path / "exp"
    sigterm_before = signal.getsignal(signal.SIGTERM)
    try:
        run = run_experiment(cfg, out, executor="ray", workers=2, progress=False, log=lambda m: None)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert signal.getsignal(signal.SIGTERM) is sigterm_before  # ray.init's own handler does not outlive the run
    assert sorted(run.finished) == ["sr/f050-none-s0", "sr/f100-none-s0"]
    assert not run.failed
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted(int(r["queries"]) for r in rows) == [4, 8]
    for cell in ("f050-none-s0", "f100-none-s0"):
        folder = out / "cells" / "sr" / cell
        assert stage_state(folder) == "done" and (folder / "surrogate" / "model.safetensors").is_file()
        assert json.loads((folder / "result.json").read_text())["records"][0]["test_set"] == "tiny test"


@pytest.mark.slow
def test_a_cell_trained_by_two_processes_with_torchrun(tiny_sr, tmp_path):
    config = tiny_sr(fractions=[1.0])
    config["tasks"][0]["processes_per_cell"] = 2
    cfg = ExperimentConfig.model_validate(config)
    out = tmp_path / "exp"
    run = run_experiment(cfg, out, progress=False, log=lambda m: None)
    assert run.finished == ["sr/f100-none-s0"]
    folder = out / "cells" / "sr" / "f100-none-s0"
    log = (folder / "torchrun.log").read_text()
    assert "Traceback" not in log
    from imgsteal.train.checkpoint import load_checkpoint

    meta = load_checkpoint(folder / "surrogate" / "model.safetensors").meta
    assert meta["pairs"] == 8 and meta["epoch"] == 1
    # rank 0 alone logged: one metrics line per logged step
    steps = [json.loads(line)["step"] for line in (folder / "surrogate" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
