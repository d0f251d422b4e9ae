"""Tiny image folders for user-study tests: two tasks, a few 40 px images each."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from imgsteal.study.create import StudySpec, TaskSpec, create_study


def write_images(folder: Path, stems: list[str], seed: int, size: int = 40, suffix: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for stem in stems:
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{stem}{suffix}")


def make_task_dirs(root: Path, name: str, n: int, seed: int = 0) -> TaskSpec:
    """originals / victim / surrogate / style folders for one task with `n` matching stems."""
    stems = [f"{name}_{i:02d}" for i in range(n)]
    base = root / name
    write_images(base / "originals", stems, seed)
    write_images(base / "victim", stems, seed + 1)
    write_images(base / "surrogate", stems, seed + 2, suffix=".jpg")
    write_images(base / "style", [f"style_{i}" for i in range(3)], seed + 3)
    return TaskSpec(
        name=name,
        originals=base / "originals",
        victim=base / "victim",
        surrogate=base / "surrogate",
        style_examples=base / "style",
        style="Monet painting" if name == "monet" else "anime character",
    )


@pytest.fixture
def task_dirs(tmp_path: Path) -> list[TaskSpec]:
    return [make_task_dirs(tmp_path / "data", "monet", 8, seed=10), make_task_dirs(tmp_path / "data", "anime", 8, seed=20)]


@pytest.fixture
def small_study(tmp_path: Path, task_dirs: list[TaskSpec]) -> Path:
    """A created study folder: 2 tasks x 4 pairs (2 F_V + 2 F_A each)."""
    out = tmp_path / "study"
    create_study(StudySpec(tasks=task_dirs, pairs=4, victim_share=0.5, seed=3), out)
    return out


@contextlib.contextmanager
def running_server(study_dir: Path) -> Iterator[str]:
    """Serve the study with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    from imgsteal.study.app import create_app
    from imgsteal.study.serve import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(study_dir), log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def server(small_study: Path) -> Iterator[str]:
    with running_server(small_study) as url:
        yield url


@pytest.fixture
def serve_folder():
    """`with serve_folder(study_dir) as url:` for tests that build their own study."""
    return running_server
