"""Tiny image folders for user-study tests: two tasks, a few 40 px images each."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from imgsteal.study.create import StudySpec, TaskSpec, create_study
from imgsteal_testkit import make_task_dirs, running_study_server


@pytest.fixture
def task_dirs(tmp_path: Path) -> list[TaskSpec]:
    return [make_task_dirs(tmp_path / "data", "monet", 8, seed=10), make_task_dirs(tmp_path / "data", "anime", 8, seed=20)]


@pytest.fixture
def small_study(tmp_path: Path, task_dirs: list[TaskSpec]) -> Path:
    """A created study folder: 2 tasks x 4 pairs (2 F_V + 2 F_A each)."""
    out = tmp_path / "study"
    create_study(StudySpec(tasks=task_dirs, pairs=4, victim_share=0.5, seed=3), out)
    return out


@pytest.fixture
def server(small_study: Path) -> Iterator[str]:
    with running_study_server(small_study) as url:
        yield url


@pytest.fixture
def serve_folder():
    """`with serve_folder(study_dir) as url:` for tests that build their own study."""
    return running_study_server
