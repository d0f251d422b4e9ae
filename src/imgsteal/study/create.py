"""Build a self-contained study folder from the originals and the F_V / F_A outputs of some tasks.

Images are matched by file stem across the three folders of a task; `pairs` distinct originals are
drawn reproducibly from `seed`, `round(pairs * victim_share)` of them shown with F_V's output and
the rest with F_A's. Every image is re-encoded to PNG (which drops metadata and file-format hints)
and stored under a random opaque id, so nothing a participant's browser sees reveals the source:

- the styled images of a task are padded (one ancillary PNG chunk of zeros) to one common byte
  size, so neither the size on disk nor Content-Length tells F_V's outputs from F_A's;
- all images are written at the end, in a random order, and given one common modification time,
  so neither file times nor write order (inode, ctime) follow the source.

study.json (which maps images to models) and study.sqlite (admin key, participant tokens) are
owner-only (0600).
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import secrets
import shutil
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Literal

import yaml
from PIL import Image
from pydantic import BaseModel, Field, field_validator, model_validator

from imgsteal.data.images import encode_png, list_images, load_image
from imgsteal.errors import ImgstealError
from imgsteal.study.model import (
    DB_FILE,
    DEFAULT_INTRO,
    IMAGE_DIR,
    Demographics,
    Item,
    Source,
    Study,
    TaskInfo,
)
from imgsteal.study.store import StudyStore

PAPER_PAIRS_PER_TASK = 20  # section 5.4: 20 pairs per task...
PAPER_VICTIM_SHARE = 0.5  # ...10 styled by F_V, 10 by F_A
MAX_STYLE_EXAMPLES = 4


class TaskSpec(BaseModel):
    """Where one task's images are. Paths may be relative to the YAML spec's folder."""

    name: str
    originals: Path
    victim: Path
    surrogate: Path
    style: str | None = None  # defaults to the task name
    style_examples: Path | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("task name must not be blank")
        return name.strip()


class StudySpec(BaseModel):
    """Everything `create_study` needs; loadable from YAML (`StudySpec.from_yaml`)."""

    tasks: list[TaskSpec]
    title: str = "Image style transfer study"
    intro: str | None = None  # default: the paper's wording, see model.DEFAULT_INTRO
    pairs: int = Field(PAPER_PAIRS_PER_TASK, ge=1)
    victim_share: float = Field(PAPER_VICTIM_SHARE, ge=0.0, le=1.0)
    seed: int = 0
    order: Literal["blocked", "mixed"] = "blocked"
    ask_demographics: bool = True
    demographics: Demographics = Field(default_factory=Demographics)
    max_style_examples: int = Field(MAX_STYLE_EXAMPLES, ge=0)

    @model_validator(mode="after")
    def _unique_task_names(self) -> "StudySpec":
        if not self.tasks:
            raise ValueError("a study needs at least one task")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StudySpec":
        """Load a spec; relative image folders are resolved against the YAML file's folder."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ImgstealError(f"{path}: cannot read study spec ({exc})") from exc
        if not isinstance(raw, dict):
            raise ImgstealError(f"{path}: a study spec must be a mapping with a 'tasks' list")
        try:
            spec = cls.model_validate(raw)
        except ValueError as exc:
            raise ImgstealError(f"{path}: invalid study spec ({exc})") from exc
        base = path.parent
        for task in spec.tasks:
            for field in ("originals", "victim", "surrogate", "style_examples"):
                value = getattr(task, field)
                if value is not None and not value.is_absolute():
                    setattr(task, field, base / value)
        return spec


def with_article(noun: str) -> str:
    """'Monet painting' -> 'a Monet painting', 'anime character' -> 'an anime character'."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _images_by_stem(folder: Path, role: str, task: str) -> dict[str, Path]:
    try:
        files = list_images(folder)
    except FileNotFoundError as exc:
        raise ImgstealError(f"task {task!r}: {role} folder not found: {folder}") from exc
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise ImgstealError(
                f"task {task!r}: two {role} images share the stem {path.stem!r} "
                f"({by_stem[path.stem].name}, {path.name}); stems must be unique to match images"
            )
        by_stem[path.stem] = path
    return by_stem


def choose_pairs(stems: list[str], pairs: int, victim_share: float, seed: int, task: str) -> list[tuple[str, Source]]:
    """Draw `pairs` distinct stems and assign each a source; reproducible from (seed, task).

    Returns [(stem, Source)], the first round(pairs * victim_share) victim, the rest surrogate.
    """
    if pairs > len(stems):
        raise ImgstealError(
            f"task {task!r}: {pairs} pairs requested but only {len(stems)} images exist in all three "
            "folders (originals, victim, surrogate) under the same file stem"
        )
    rng = random.Random(f"imgsteal-study/{seed}/{task}")
    chosen = rng.sample(sorted(stems), pairs)
    n_victim = int(round(pairs * victim_share))
    return [(stem, Source.victim if i < n_victim else Source.surrogate) for i, stem in enumerate(chosen)]


PAD_CHUNK = b"paDd"  # ancillary, private, safe-to-copy: decoders skip it


def pad_png(data: bytes, size: int) -> bytes:
    """`data` (a PNG) grown to exactly `size` bytes by one zero-filled ancillary chunk before IEND.

    Needs size >= len(data) + 12 (a chunk's length, type and CRC); decoders ignore the chunk."""
    extra = size - len(data) - 12
    if extra < 0:
        raise ValueError(f"cannot pad a {len(data)}-byte PNG to {size} bytes (needs at least {len(data) + 12})")
    if not data.endswith(b"IEND\xaeB`\x82"):
        raise ValueError("not a PNG ending in IEND")
    payload = bytes(extra)
    chunk = struct.pack(">I", extra) + PAD_CHUNK + payload + struct.pack(">I", zlib.crc32(PAD_CHUNK + payload))
    return data[:-12] + chunk + data[-12:]


class _ImageWriter:
    """Re-encodes images to PNG under fresh opaque ids; `flush` writes them all at once.

    Images of one `pad_group` (e.g. the styled images of a task) are padded to one byte size, and
    every file is written in a random order and then given the same modification time."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._pending: dict[str, bytes] = {}
        self._groups: dict[str, list[str]] = {}

    def add(self, source_path: Path, pad_group: str | None = None) -> str:
        image_id = secrets.token_hex(8)
        while image_id in self._pending:
            image_id = secrets.token_hex(8)
        self._pending[image_id] = encode_png(load_image(source_path))
        if pad_group is not None:
            self._groups.setdefault(pad_group, []).append(image_id)
        return image_id

    def flush(self) -> None:
        for ids in self._groups.values():
            size = max(len(self._pending[i]) for i in ids) + 12
            for i in ids:
                self._pending[i] = pad_png(self._pending[i], size)
        order = list(self._pending)
        random.SystemRandom().shuffle(order)
        stamp = int(time.time())
        for image_id in order:
            (self.folder / f"{image_id}.png").write_bytes(self._pending[image_id])
        for image_id in order:
            os.utime(self.folder / f"{image_id}.png", (stamp, stamp))
        self._pending.clear()
        self._groups.clear()


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            return img.size
    except OSError:
        return None  # unreadable files fail later, with a clear error, when they are re-encoded


def _warn_if_sizes_differ(task: str, stems: list[str], victim: dict[str, Path], surrogate: dict[str, Path]) -> None:
    """Warn when F_V and F_A give different pixel sizes for the same input: a tell for the source."""
    differing = [s for s in stems if _image_size(victim[s]) != _image_size(surrogate[s])]
    if differing:
        example = differing[0]
        warnings.warn(
            f"task {task!r}: for {len(differing)} of {len(stems)} chosen inputs, F_V's and F_A's outputs differ in "
            f"size (e.g. {example}: {_image_size(victim[example])} vs {_image_size(surrogate[example])}); "
            "a participant who inspects the image files could tell them apart",
            stacklevel=3,
        )


def _warn_if_shapes_differ(task: str, stems: list[str], originals: dict[str, Path], styled: dict[str, Path]) -> None:
    """Warn when an original and its styled image differ in aspect ratio or size: participants compare
    them side by side, and a crop or a stretch is a difference the model did not make."""
    differing = []
    for stem in stems:
        (ow, oh), (sw, sh) = _image_size(originals[stem]), _image_size(styled[stem])
        if (ow, oh) != (sw, sh):
            differing.append((stem, (ow, oh), (sw, sh), abs(ow / oh - sw / sh) > 0.01))
    if differing:
        stem, original, other, aspect = differing[0]
        what = "aspect ratio" if any(d[3] for d in differing) else "size"
        warnings.warn(
            f"task {task!r}: for {len(differing)} of {len(stems)} inputs the original and the styled image differ in "
            f"{what} (e.g. {stem}: {original[0]}x{original[1]} vs {other[0]}x{other[1]}); use the inputs the models "
            "were given (an experiment's evaluation/outputs/<set>/input, or `study create --experiment`)",
            stacklevel=3,
        )


def tasks_from_experiment(folder: str | Path) -> list[TaskSpec]:
    """Study tasks from an experiment's (or the demo's) style-transfer tasks: the inputs, F_V's and F_A's
    outputs kept by the report's gallery cell (evaluation/outputs/<first test set>/, named by input
    stem), and the task's style set as the style examples. ImgstealError when there are none."""
    from imgsteal.experiments.config import load_config

    folder = Path(folder)
    if not (folder / "config.yaml").is_file() and (folder / "experiment" / "config.yaml").is_file():
        folder = folder / "experiment"  # the demo's folder holds its experiment
    if not (folder / "config.yaml").is_file():
        raise ImgstealError(f"{folder} is not an experiment or demo folder (no config.yaml)")
    cfg = load_config(folder / "config.yaml")
    tasks = []
    for task in cfg.tasks:
        if task.kind_spec.has_truth:
            continue  # the study rates style transfer
        scored = sorted((folder / "cells" / task.name).glob("*/evaluation/outputs/*/surrogate0"), reverse=True)
        if not scored:
            continue
        outputs = scored[0].parent  # the largest fraction first (folder names sort by fraction)
        examples = None
        if task.style_set:
            from imgsteal.data.layouts import resolve_images

            parents = {p.parent for p in resolve_images(cfg.expand(task.style_set))}
            examples = parents.pop() if len(parents) == 1 else None
        tasks.append(TaskSpec(name=task.display_title, originals=outputs / "input", victim=outputs / "victim",
                              surrogate=outputs / "surrogate0", style_examples=examples))
    if not tasks:
        raise ImgstealError(f"{folder} holds no finished style-transfer cell with its scored images "
                            "(run the experiment or `imgsteal demo --task style` first)")
    return tasks


def create_study(spec: StudySpec, out_dir: str | Path) -> Study:
    """Create `out_dir` (must not exist or be empty): images/, study.json and study.sqlite.

    Returns the Study. Raises ImgstealError for missing folders, too few matching images or an
    existing non-empty `out_dir`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ImgstealError(f"{out_dir} already exists and is not empty; choose a new study folder")
    # Check every task's inputs before writing anything.
    plans = []
    for task in spec.tasks:
        originals = _images_by_stem(task.originals, "originals", task.name)
        victim = _images_by_stem(task.victim, "victim", task.name)
        surrogate = _images_by_stem(task.surrogate, "surrogate", task.name)
        common = sorted(set(originals) & set(victim) & set(surrogate))
        chosen = choose_pairs(common, spec.pairs, spec.victim_share, spec.seed, task.name)
        _warn_if_sizes_differ(task.name, [stem for stem, _ in chosen], victim, surrogate)
        _warn_if_shapes_differ(task.name, [stem for stem, source in chosen if source is Source.victim], originals, victim)
        _warn_if_shapes_differ(task.name, [stem for stem, source in chosen if source is Source.surrogate], originals,
                               surrogate)
        examples: list[Path] = []
        if task.style_examples is not None:
            try:
                examples = list_images(task.style_examples)
            except FileNotFoundError as exc:
                raise ImgstealError(f"task {task.name!r}: style examples folder not found: {task.style_examples}") from exc
            rng = random.Random(f"imgsteal-study-examples/{spec.seed}/{task.name}")
            examples = rng.sample(examples, min(spec.max_style_examples, len(examples)))
        plans.append((task, originals, victim, surrogate, chosen, examples))

    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    try:
        writer = _ImageWriter(image_dir)
        tasks: list[TaskInfo] = []
        items: list[Item] = []
        for task, originals, victim, surrogate, chosen, examples in plans:
            style = task.style or task.name
            tasks.append(
                TaskInfo(
                    name=task.name,
                    style=style,
                    prompt=f"How much does the styled image look like {with_article(style)} version of the original?",
                    low_anchor="No resemblance",
                    high_anchor=f"Looks very much like {with_article(style)} version of the input",
                    example_images=[writer.add(p) for p in examples],
                )
            )
            task_items = []
            for stem, source in chosen:
                styled = victim[stem] if source is Source.victim else surrogate[stem]
                task_items.append(
                    Item(
                        id=secrets.token_hex(6),
                        task=task.name,
                        source=source,
                        stem=stem,
                        original_image=writer.add(originals[stem]),
                        styled_image=writer.add(styled, pad_group=f"styled/{task.name}"),
                    )
                )
            items.extend(task_items)
        writer.flush()

        styles = " or ".join(f"{with_article(t.style)} version" for t in tasks)
        intro = spec.intro if spec.intro is not None else DEFAULT_INTRO.format(styles=styles)
        study = Study(
            title=spec.title,
            intro=intro,
            tasks=tasks,
            items=items,
            order=spec.order,
            ask_demographics=spec.ask_demographics,
            demographics=spec.demographics,
            seed=spec.seed,
            pairs_per_task=spec.pairs,
            victim_share=spec.victim_share,
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        study.save(out_dir)
        StudyStore.create(out_dir / DB_FILE).close()
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return study
