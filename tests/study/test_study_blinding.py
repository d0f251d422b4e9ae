"""Blinding against the HTTP layer, and the study's secrets (issue 16 items 1 and 2).

A participant who fetches every image with its headers must not tell F_V's outputs from F_A's by
anything but the pixels: not by ETag, Last-Modified, Content-Length, image id, response time or
position. The test plays that participant with one median-split predictor per observable and
requires each to stay near chance (50%); today's layout (mtime-based ETags and Last-Modified,
victims written first, sizes following the source) gave 100%.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from imgsteal.study.create import StudySpec, TaskSpec, create_study
from imgsteal.study.model import Study
from imgsteal.study.store import StudyStore

PAIRS = 40
CHANCE_BOUND = 0.8  # 32 of 40 by a median split happens by chance with p ~ 1e-4 per predictor


def _images(folder: Path, stems: list[str], seed: int, suffix: str, smooth: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for stem in stems:
        arr = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        if smooth:  # F_A's outputs compress much better: a size tell unless padded
            img = img.resize((6, 6)).resize((24, 24))
        img.save(folder / f"{stem}{suffix}")


@pytest.fixture
def blind_study(tmp_path: Path) -> Path:
    stems = [f"s{i:02d}" for i in range(PAIRS)]
    base = tmp_path / "data"
    _images(base / "originals", stems, 1, ".png")
    _images(base / "victim", stems, 2, ".png")
    _images(base / "surrogate", stems, 3, ".jpg", smooth=True)
    task = TaskSpec(name="monet", originals=base / "originals", victim=base / "victim", surrogate=base / "surrogate",
                    style="Monet painting")
    out = tmp_path / "study"
    create_study(StudySpec(tasks=[task], pairs=PAIRS, victim_share=0.5, seed=1, ask_demographics=False), out)
    return out


def median_split_accuracy(values: list, truth: list[bool], seed: int = 0) -> float:
    """Accuracy of 'the upper half by `values` is F_V' (or its reverse, whichever is better); ties in random order."""
    order = list(range(len(values)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: values[i])  # stable: ties keep the random order
    upper = set(order[len(order) // 2:])
    hits = sum((i in upper) == truth[i] for i in range(len(truth)))
    return max(hits, len(truth) - hits) / len(truth)


def test_a_participant_cannot_tell_the_source_from_http(blind_study, serve_folder):
    study = Study.load(blind_study)
    items = study.item_map()
    seen = []  # one dict per styled image, in the order the participant met them
    with serve_folder(blind_study) as url, httpx.Client(base_url=url, follow_redirects=False, timeout=10) as client:
        path = client.post("/start").headers["location"]
        for position in range(PAIRS):
            html = client.get(path).text
            item_id = re.search(r'name="item" value="([0-9a-f]+)"', html).group(1)
            original_id, styled_id = re.findall(r'src="/img/([0-9a-f]+)"', html)
            assert styled_id == items[item_id].styled_image and original_id == items[item_id].original_image
            for image_id in (original_id, styled_id):
                started = time.perf_counter()
                r = client.get(f"/img/{image_id}")
                elapsed = time.perf_counter() - started
                assert r.status_code == 200
                assert "last-modified" not in r.headers
                assert r.headers["etag"] == '"' + hashlib.sha256(r.content).hexdigest()[:32] + '"'
                assert client.get(f"/img/{image_id}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
                if image_id == styled_id:
                    seen.append({"victim": items[item_id].source.value == "victim", "id": image_id,
                                 "etag": r.headers["etag"], "length": len(r.content),
                                 "headers": tuple(sorted(k for k in r.headers if k != "date")),
                                 "elapsed": elapsed, "position": position, "item": item_id})
            assert client.post(f"{path}/rate", data={"item": item_id, "rating": "3"}).status_code == 303
    truth = [s["victim"] for s in seen]
    assert sum(truth) == PAIRS // 2
    assert len({s["length"] for s in seen}) == 1  # styled images are padded to one size
    assert len({s["headers"] for s in seen}) == 1  # the same header names on every image
    accuracy = {name: median_split_accuracy([s[name] for s in seen], truth)
                for name in ("id", "etag", "length", "elapsed", "position", "item")}
    # on disk (what a careless server could expose): equal mtimes, write order (ctime) independent of the source
    files = [blind_study / "images" / f"{s['id']}.png" for s in seen]
    assert len({f.stat().st_mtime_ns for f in files}) == 1
    accuracy["disk ctime"] = median_split_accuracy([f.stat().st_ctime_ns for f in files], truth)
    accuracy["disk inode"] = median_split_accuracy([f.stat().st_ino for f in files], truth)
    print("participant prediction accuracy per observable:", json.dumps({k: round(v, 3) for k, v in accuracy.items()}))
    assert max(accuracy.values()) <= CHANCE_BOUND, accuracy
    # and the padded PNGs still decode to the same pixels
    with Image.open(files[0]) as img:
        img.load()


def test_study_secrets_are_owner_only(blind_study, serve_folder):
    for name in ("study.sqlite", "study.json"):
        assert stat.S_IMODE((blind_study / name).stat().st_mode) == 0o600, name
    with serve_folder(blind_study) as url:
        httpx.post(f"{url}/start")
    for path in blind_study.glob("study.sqlite*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    os.chmod(blind_study / "study.sqlite", 0o644)  # a database from an older version is tightened on open
    os.chmod(blind_study / "study.json", 0o644)
    StudyStore(blind_study / "study.sqlite")
    Study.load(blind_study)
    assert stat.S_IMODE((blind_study / "study.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((blind_study / "study.json").stat().st_mode) == 0o600


def test_access_log_holds_no_token_and_no_admin_key(blind_study):
    admin_key = StudyStore(blind_study / "study.sqlite").admin_key()
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsteal", "study", "serve", str(blind_study), "--port", "0", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            assert line, "server exited before announcing its URL"
            if line.startswith("participants: "):
                url = line.split(": ", 1)[1].strip().rstrip("/")
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(50):  # wait until the access log is live
                try:
                    client.get("/healthz-not-there")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            token = client.post("/start").headers["location"].rsplit("/", 1)[1]
            assert client.get(f"/p/{token}").status_code == 200
            assert client.get(f"/p/{token}?again=1").status_code == 200
            assert client.get("/admin").status_code == 401  # asks for the key
            login = client.post("/admin/login", data={"key": admin_key})
            assert login.status_code == 303 and admin_key not in login.headers["location"]
            assert client.get("/admin").status_code == 200  # the cookie carries the key
            assert client.get("/admin/ratings.csv", headers={"X-Admin-Key": admin_key}).status_code == 200
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    access = [line for line in output.splitlines() if '"GET ' in line or '"POST ' in line]
    assert len(access) >= 7, output
    assert any("/p/<token>" in line for line in access)
    for line in access:
        assert token not in line and admin_key not in line, line
