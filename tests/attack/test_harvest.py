import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from imgsteal.attack.harvest import harvest, query_cost
from imgsteal.data.images import decode_image
from imgsteal.data.pairs import PairStore
from imgsteal.victim.inference import load_translator
from imgsteal.victim.oracle import LocalOracle

from imgsteal_testkit import write_images


class CountingOracle(LocalOracle):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = 0

    def stream(self, requests):
        def counted():
            for item in requests:
                self.sent += 1
                yield item

        return super().stream(counted())


def test_harvest_stores_pairs_dedupes_and_resumes(tmp_path, sr_victim, capsys):
    paths = write_images(tmp_path / "x", 6, size=(32, 32))
    (tmp_path / "x" / "dup.png").write_bytes(paths[0].read_bytes())  # same content, another name
    (tmp_path / "x" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    inputs = sorted((tmp_path / "x").iterdir())
    oracle = CountingOracle(load_translator(sr_victim, "cpu"), max_batch=4)
    capsys.readouterr()
    with PairStore(tmp_path / "store") as store, warnings.catch_warnings():
        warnings.simplefilter("error")  # one plain line on stderr, not a Python warning
        report = harvest(oracle, inputs, store, downscale=4, progress=False)
    assert report.queried == 6 and report.duplicates == 1 and report.unreadable == 1
    skipped = [line for line in capsys.readouterr().err.splitlines() if "broken.png" in line]
    assert len(skipped) == 1 and "object at 0x" not in skipped[0]
    assert skipped[0].startswith(f"skipped {tmp_path / 'x' / 'broken.png'}: not a readable image (")
    assert oracle.sent == 6
    with PairStore(tmp_path / "store") as store:
        records = store.records()
        assert len(records) == 6
        x, y = store.load_pair(records[0])
        assert x.shape == (3, 8, 8) and y.shape == (3, 32, 32)
        assert records[0].cost_usd == pytest.approx(0.016 * 32 * 32 / 65536)
        again = harvest(oracle, inputs, store, downscale=4, progress=False)
    assert again.queried == 0 and again.already_stored == 6 and oracle.sent == 6  # nothing re-sent


def test_budget_caps_the_store_across_runs(tmp_path, sr_victim):
    inputs = write_images(tmp_path / "x", 5, size=(16, 16))
    oracle = LocalOracle(load_translator(sr_victim, "cpu"))
    with PairStore(tmp_path / "s") as store:
        assert harvest(oracle, inputs, store, budget=2, progress=False).queried == 2
        second = harvest(oracle, inputs, store, budget=3, progress=False)
        assert second.queried == 1 and len(store) == 3 and second.budget_left == 0


def test_query_cost_scales_with_pixels():
    assert query_cost(256, 256) == pytest.approx(0.016)
    assert query_cost(512, 256, price=0.02) == pytest.approx(0.04)


def _harvest_cmd(victim, inputs, store):
    code = "from imgsteal.cli import main; main()"
    return [sys.executable, "-c", code, "harvest", "--oracle", str(victim), "--inputs", str(inputs), "--out", str(store)]


@pytest.mark.slow  # over 10 s on the busy 2-core box (subprocesses / served model / reference features)
def test_harvest_killed_at_any_moment_loses_no_answered_pair(tmp_path, sr_victim):
    write_images(tmp_path / "x", 400, size=(32, 32), seed=3)
    store = tmp_path / "store"
    proc = subprocess.Popen(_harvest_cmd(sr_victim, tmp_path / "x", store), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = store / "manifest.sqlite"
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM queries").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 10:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "harvest finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with PairStore(store) as s:  # every committed row has both images, readable
        before = s.records()
        assert len(before) >= 10
        for r in before:
            x, y = s.load_pair(r)
            assert y.shape[-1] == 4 * x.shape[-1]
    done = subprocess.run(_harvest_cmd(sr_victim, tmp_path / "x", store), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["already_stored"] == len(before)
    assert report["queried"] == 400 - len(before)
    with PairStore(store) as s:
        records = s.records()
        assert len(records) == 400 == len({r.input_sha256 for r in records})


def test_seeded_subsets_do_not_depend_on_arrival_order(tmp_path, sr_victim):
    inputs = write_images(tmp_path / "x", 8, size=(16, 16))
    oracle = LocalOracle(load_translator(sr_victim, "cpu"))
    picks = []
    for name, order in (("a", inputs), ("b", list(reversed(inputs)))):
        with PairStore(tmp_path / name) as store:
            harvest(oracle, order, store, progress=False)
            half = {r.input_sha256 for r in store.select(0.5, seed=3)}
            quarter = {r.input_sha256 for r in store.select(0.25, seed=3)}
            assert len(half) == 4 and quarter <= half  # nested subsets
            picks.append(half)
    assert picks[0] == picks[1]


def test_a_budget_that_ends_the_harvest_early_shrinks_the_progress_bar_to_match(tmp_path, sr_victim, capsys):
    inputs = write_images(tmp_path / "x", 6, size=(16, 16))
    oracle = LocalOracle(load_translator(sr_victim, "cpu"))
    with PairStore(tmp_path / "s") as store:
        report = harvest(oracle, inputs, store, budget=2, progress=True)
    assert report.queried == 2
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "budget reached" in final and " 2/2 " in final, final
