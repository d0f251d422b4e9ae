"""What a study is: its tasks, its rated items and the questionnaire's wording, saved as study.json.

An item is one (original, styled) pair; its `source` says whether the styled image came from the
victim F_V or the surrogate F_A. study.json is never served and is owner-only (0600): participants
only see opaque image and item ids, so neither URLs nor file names reveal the source.
"""

from __future__ import annotations

import json
import os
import random
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from imgsteal.errors import ImgstealError

STUDY_FILE = "study.json"
DB_FILE = "study.sqlite"
IMAGE_DIR = "images"
SCHEMA_VERSION = 1

PREFER_NOT_TO_SAY = "Prefer not to say"

DEFAULT_INTRO = (
    "Thank you for taking part in this study about image style transfer: computer programs that "
    "redraw a picture in a different style, for example as a painting or as an anime character.\n\n"
    "You will see pairs of images: an original image and a styled version of it that a program "
    "has transformed into a target style. Examples of each target style are shown below.\n\n"
    "For each pair, rate how well the transformation worked, on a scale from 1 to 5: "
    "5 means the styled image looks very much like {styles} of the original; "
    "1 means there is no such resemblance.\n\n"
    "The study evaluates which of the transformations are successful in your opinion; it does not "
    "evaluate your skill in making this judgement. There are no right or wrong answers. "
    "No personally identifiable information is collected."
)


class Source(str, Enum):
    """Which model produced a styled image: the victim F_V or the adversary's surrogate F_A."""

    victim = "victim"
    surrogate = "surrogate"


class Demographics(BaseModel):
    """Choices offered on the optional demographics page (Figure 5: gender, age, education)."""

    gender: list[str] = ["Female", "Male", "Non-binary", "Other", PREFER_NOT_TO_SAY]
    age: list[str] = ["18-24", "25-34", "35-44", "45-54", "55-64", "65 or older", PREFER_NOT_TO_SAY]
    education: list[str] = [
        "Secondary school or lower",
        "Vocational training",
        "Bachelor's degree",
        "Master's degree",
        "Doctorate",
        PREFER_NOT_TO_SAY,
    ]

    def choices(self, field: str) -> list[str]:
        """The allowed answers for `field` ('gender', 'age' or 'education')."""
        return list(getattr(self, field))

    @field_validator("gender", "age", "education")
    @classmethod
    def _non_empty_unique(cls, values: list[str]) -> list[str]:
        if not values or len(set(values)) != len(values) or any(not v.strip() for v in values):
            raise ValueError("demographic choices must be non-empty, unique and not blank")
        return values


DEMOGRAPHIC_FIELDS = ("gender", "age", "education")


class TaskInfo(BaseModel):
    """One style-transfer task as participants see it."""

    name: str
    style: str  # e.g. "Monet painting": fills "looks very much like a <style> version of the input"
    prompt: str
    low_anchor: str
    high_anchor: str
    example_images: list[str] = Field(default_factory=list)  # opaque image ids


class Item(BaseModel):
    """One rated pair. `source` and `stem` are for the analysis only, never shown."""

    id: str
    task: str
    source: Source
    stem: str
    original_image: str  # opaque image id
    styled_image: str  # opaque image id


class Study(BaseModel):
    """The whole questionnaire definition (study.json)."""

    schema_version: int = SCHEMA_VERSION
    title: str
    intro: str
    tasks: list[TaskInfo]
    items: list[Item]
    order: Literal["blocked", "mixed"] = "blocked"
    ask_demographics: bool = True
    demographics: Demographics = Field(default_factory=Demographics)
    seed: int
    pairs_per_task: int
    victim_share: float
    created_at: str

    def task(self, name: str) -> TaskInfo:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def item_map(self) -> dict[str, Item]:
        return {item.id: item for item in self.items}

    def image_ids(self) -> set[str]:
        ids = {i.original_image for i in self.items} | {i.styled_image for i in self.items}
        for task in self.tasks:
            ids.update(task.example_images)
        return ids

    def save(self, study_dir: Path) -> None:
        """Write study.json into `study_dir`, owner-only (0600): it maps every image to its model."""
        path = Path(study_dir) / STUDY_FILE
        data = (json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        tmp = path.with_name(f".{STUDY_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, study_dir: str | Path) -> "Study":
        """Read `study_dir/study.json`; raises ImgstealError when it is missing or invalid."""
        path = Path(study_dir) / STUDY_FILE
        if not path.is_file():
            raise ImgstealError(f"{study_dir} is not a study folder (no {STUDY_FILE}); create one with `imgsteal study create`")
        if path.stat().st_mode & 0o077:  # made by an older version: tighten to owner-only
            os.chmod(path, 0o600)
        try:
            study = cls.model_validate_json(path.read_text())
        except ValueError as exc:
            raise ImgstealError(f"{path}: invalid study definition ({exc})") from exc
        if study.schema_version != SCHEMA_VERSION:
            raise ImgstealError(f"{path}: schema version {study.schema_version}, expected {SCHEMA_VERSION}")
        return study


def participant_order(study: Study, seed: int) -> list[str]:
    """The item ids in the order one participant sees them, a pure function of (study, seed).

    'blocked': tasks stay together (task order and the items inside each task are shuffled);
    'mixed': all items shuffled together.
    """
    rng = random.Random(seed)
    if study.order == "mixed":
        ids = [item.id for item in study.items]
        rng.shuffle(ids)
        return ids
    task_names = [task.name for task in study.tasks]
    rng.shuffle(task_names)
    order: list[str] = []
    for name in task_names:
        ids = [item.id for item in study.items if item.task == name]
        rng.shuffle(ids)
        order.extend(ids)
    return order
