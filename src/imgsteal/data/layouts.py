"""Dataset folder layouts: from a dataset's root folder to the sorted image files of one split.

The datasets of the paper (CycleGAN monet2photo / selfie2anime, Intel Image Classification,
Landscape, CelebA, LFW, DIV2K, Flickr2K, Set5 / Set14 / BSD100 / Urban100) are laid out on disk
in a few common ways; each layout function accepts the usual variants (the dataset root, the split
folder itself, Kaggle's doubled folders) and fails with a FileNotFoundError naming the path it
expected. Configs name a dataset with one string, `layout:path[:split]`, resolved by
`resolve_images` (e.g. "div2k:/data/DIV2K:valid", "cyclegan:/data/monet2photo:trainB",
"demo:attacker", or just a folder path).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from imgsteal.data.images import IMAGE_SUFFIXES, list_images
from imgsteal.errors import ImgstealError


class DatasetSpecError(ImgstealError, ValueError):
    """A dataset spec names an unknown layout or split, or lacks its path."""


# --------------------------------------------------------------------------- helpers


def _require_images(files: list[Path], folder: Path) -> list[Path]:
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def _first_dir(candidates: list[Path], what: str) -> Path:
    """The first candidate that is a folder, else FileNotFoundError listing every candidate."""
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in dict.fromkeys(candidates))
    raise FileNotFoundError(f"{what} not found; expected one of: {tried}")


def _named_folder(root: Path, names: tuple[str, ...], parents: tuple[str, ...] = ()) -> list[Path]:
    """Candidate locations of a folder called one of `names`: root itself, root/name, root/parent/name."""
    candidates = [root for name in names if root.name.lower() == name.lower()]
    candidates += [root / name for name in names]
    candidates += [root / parent / name for parent in parents for name in names]
    return candidates


# Stems of low-resolution copies: "baby_LR", "img_001_SRF_4_LR" (SelfExSR), "0001x4" (DIV2K).
_LOW_RES_SUFFIX = re.compile(r"(?i)(_lr|(?<=\d)x[2348])$")
# "babyx4" / "baby_x4" is a low-resolution copy only when "baby" sits beside it (EDSR benchmark names).
_SCALE_SUFFIX = re.compile(r"(?i)^(.+?)_?x[2348]$")


def is_low_res_name(path: Path) -> bool:
    """True for file names that mark a low-resolution copy (or a method's output) of an SR image."""
    stem = path.stem
    if "_SRF_" in stem.upper():  # SelfExSR layout: only *_HR files are ground truth
        return not stem.upper().endswith("_HR")
    return bool(_LOW_RES_SUFFIX.search(stem))


def drop_low_res(files: list[Path]) -> list[Path]:
    """`files` without low-resolution copies: LR-marked names, and "<name>x4" next to "<name>"."""
    stems = {p.stem.lower() for p in files}
    kept = []
    for path in files:
        match = _SCALE_SUFFIX.match(path.stem)
        if is_low_res_name(path) or (match and match.group(1).lower() in stems):
            continue
        kept.append(path)
    return kept


# --------------------------------------------------------------------------- layouts


def folder_images(root: str | Path, split: str = "all") -> list[Path]:
    """Every image under `root`, recursively (png, jpg, jpeg, webp, bmp), sorted. `split` is unused."""
    root = Path(root)
    return _require_images(list_images(root), root)


def div2k_images(root: str | Path, split: str = "train") -> list[Path]:
    """DIV2K high-resolution images of split 'train' (800) or 'valid' (100).

    `root` is the folder holding `DIV2K_<split>_HR/` (directly or under `DIV2K/`), or that folder.
    Low-resolution folders (`DIV2K_<split>_LR_*`) are never read.
    """
    root = Path(root)
    name = f"DIV2K_{split}_HR"
    folder = _first_dir(_named_folder(root, (name,), parents=("DIV2K",)), f"DIV2K {split} HR folder")
    files = drop_low_res(list_images(folder))
    return _require_images(files, folder)


def flickr2k_images(root: str | Path, split: str = "all") -> list[Path]:
    """Flickr2K high-resolution images (2650): `Flickr2K_HR/` or `Flickr2K/Flickr2K_HR/` under `root`."""
    root = Path(root)
    folder = _first_dir(_named_folder(root, ("Flickr2K_HR",), parents=("Flickr2K",)), "Flickr2K HR folder")
    files = drop_low_res(list_images(folder))
    return _require_images(files, folder)


SR_BENCHMARKS: dict[str, tuple[str, ...]] = {
    "Set5": ("Set5",),
    "Set14": ("Set14",),
    "BSD100": ("BSD100", "B100", "BSDS100"),
    "Urban100": ("Urban100",),
}
# Sub-folders that hold the ground truth, in the order the common layouts use them.
_SR_HR_FOLDERS = ("HR", "GTmod12", "GTmod4", "GT", "original")


def _sr_hr_files(folder: Path, scale: int) -> list[Path]:
    for sub in _SR_HR_FOLDERS:
        if (folder / sub).is_dir():
            return drop_low_res(list_images(folder / sub, recursive=False))
    srf = sorted(folder.glob("image_SRF_*"))
    if srf:
        preferred = folder / f"image_SRF_{scale}"
        chosen = preferred if preferred.is_dir() else srf[0]
        return [p for p in list_images(chosen, recursive=False) if p.stem.upper().endswith("_HR")]
    return drop_low_res(list_images(folder, recursive=False))


def sr_benchmark_images(root: str | Path, split: str = "Set5", scale: int = 4) -> list[Path]:
    """High-resolution images of Set5, Set14, BSD100 or Urban100, or 'all' of those under `root`.

    Accepts `<name>/HR`, `<name>/GTmod12`, `<name>/original`, the SelfExSR layout
    `<name>/image_SRF_<scale>/*_HR.png`, or a flat folder; LR files are excluded by name
    (`*_LR`, `*x4`). `root` may be the benchmark folder itself. 'all' is the paper's SRBenchmark:
    the union of the four (5 + 14 + 100 + 100 = 219 images; the paper says 294, see
    docs/fidelity.md). It needs all four: a missing one is a FileNotFoundError naming it, never a
    silently smaller test set (name the benchmarks you have as separate test sets instead).
    """
    root = Path(root)
    if split == "all":
        files: list[Path] = []
        missing: list[str] = []
        for name in SR_BENCHMARKS:
            try:
                files += sr_benchmark_images(root, name, scale)
            except FileNotFoundError as exc:
                missing.append(f"{name} ({exc})")
        if missing:
            found = [n for n in SR_BENCHMARKS if not any(m.startswith(n + " ") for m in missing)]
            hint = (f"; to score the ones present, name them as separate test sets, e.g. srbench:{root}:{found[0]}"
                    if found else "")
            raise FileNotFoundError(
                f"SRBenchmark (srbench:...:all) needs Set5, Set14, BSD100 and Urban100 under {root}; "
                f"missing: {'; '.join(missing)}{hint}"
            )
        return files
    names = next((v for k, v in SR_BENCHMARKS.items() if k.lower() == split.lower()), None)
    if names is None:
        choices = ", ".join(SR_BENCHMARKS)
        raise DatasetSpecError(f"unknown SR benchmark {split!r}; choose one of {choices} or all")
    folder = _first_dir(_named_folder(root, names), f"{split} folder")
    return _require_images(sorted(_sr_hr_files(folder, scale)), folder)


def cyclegan_images(root: str | Path, split: str = "trainA") -> list[Path]:
    """CycleGAN dataset images (monet2photo, selfie2anime): `<root>/<split>/` or the split folder."""
    root = Path(root)
    folder = _first_dir(_named_folder(root, (split,)), f"CycleGAN {split} folder")
    return _require_images(list_images(folder), folder)


def intel_images(root: str | Path, split: str = "train") -> list[Path]:
    """Intel Image Classification: 'train' (14,034), 'test' or 'pred' images, all classes.

    Accepts `seg_<split>/seg_<split>/<class>/*.jpg` (Kaggle), `seg_<split>/<class>/*.jpg`, or the
    `seg_<split>` folder itself.
    """
    root = Path(root)
    name = f"seg_{split}"
    folder = _first_dir(_named_folder(root, (name,)), f"Intel {split} folder")
    return _require_images(list_images(folder), folder)


_CELEBA_PARTITIONS = {"train": "0", "valid": "1", "test": "2"}
_CELEBA_PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")


def _celeba_partition(candidates: list[Path], split: str) -> set[str]:
    """File names of one CelebA partition, read from list_eval_partition.txt (or Kaggle's .csv)."""
    for folder in candidates:
        for name in _CELEBA_PARTITION_FILES:
            path = folder / name
            if not path.is_file():
                continue
            wanted = _CELEBA_PARTITIONS[split]
            with open(path, newline="", encoding="utf-8") as handle:
                if path.suffix == ".csv":
                    rows = ((r["image_id"], r["partition"]) for r in csv.DictReader(handle))
                else:
                    rows = (tuple(line.split()[:2]) for line in handle if line.strip())
                return {image for image, part in rows if part.strip() == wanted}
    tried = ", ".join(str(f / n) for f in dict.fromkeys(candidates) for n in _CELEBA_PARTITION_FILES)
    raise FileNotFoundError(f"CelebA split {split!r} needs the partition list; expected one of: {tried}")


def celeba_images(root: str | Path, split: str = "all") -> list[Path]:
    """CelebA aligned faces from `img_align_celeba/`: 'all' (202,599) or 'train' (162,770), 'valid', 'test'.

    The partitions come from `list_eval_partition.txt` (or Kaggle's `.csv`) beside the image folder.
    Faces are 178 x 218; crop with `center_crop_resize` before use.
    """
    root = Path(root)
    folder = _first_dir(_named_folder(root, ("img_align_celeba",)), "CelebA img_align_celeba folder")
    files = _require_images(list_images(folder), folder)
    if split == "all":
        return files
    keep = _celeba_partition([root, folder.parent, folder], split)
    return _require_images([p for p in files if p.name in keep], folder)


_LFW_FOLDERS = ("lfw", "lfw-deepfunneled", "lfw_funneled", "lfw-funneled")


def lfw_images(root: str | Path, split: str = "all") -> list[Path]:
    """LFW faces (13,233): `lfw/<person>/*.jpg`, or funneled `lfw-deepfunneled/`, `lfw_funneled/`.

    Faces are centred in 250 x 250 images; crop with `center_crop_resize` before use.
    """
    root = Path(root)
    folder = _first_dir(_named_folder(root, _LFW_FOLDERS), "LFW folder")
    return _require_images(list_images(folder), folder)


# The style demo holds every DEMO_VICTIM_TEST_EVERY-th victim photo (in sorted order) out of the
# victim's training, as the victim's own test split.
DEMO_VICTIM_TEST_EVERY = 6


def demo_images(root: str | Path | None = None, split: str = "attacker_photos") -> list[Path]:
    """Images of one split of the bundled demo set (see imgsteal.data.demo); `root` is unused.

    victim_train / victim_test: the victim's photos without / with only every 6th one (sorted by name).
    """
    from imgsteal.data.demo import demo_data

    if split in ("victim_train", "victim_test"):
        photos = sorted(demo_images(root, "victim_photos"))
        held_out = [i % DEMO_VICTIM_TEST_EVERY == DEMO_VICTIM_TEST_EVERY - 1 for i in range(len(photos))]
        return [p for p, test in zip(photos, held_out) if test == (split == "victim_test")]
    folder = demo_data().split(split)
    return _require_images(list_images(folder), folder)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Layout:
    """A named folder layout: how to find the images of each split under a root folder.

    splits: accepted split names, the first is the default; aliases: other names for them
    (case-insensitive); needs_root: False for data that ships with the package;
    center_crop: face datasets whose images should go through `center_crop_resize`.
    """

    name: str
    find: Callable[[Path, str], list[Path]]
    splits: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    needs_root: bool = True
    center_crop: bool = False
    description: str = ""

    def canonical_split(self, split: str | None) -> str:
        """The split name as the layout spells it; DatasetSpecError if it has no such split."""
        if split is None or split == "":
            return self.splits[0]
        lowered = {s.lower(): s for s in self.splits}
        lowered.update({a.lower(): s for a, s in self.aliases.items()})
        try:
            return lowered[split.lower()]
        except KeyError:
            raise DatasetSpecError(
                f"layout {self.name!r} has no split {split!r}; choose one of {', '.join(self.splits)}"
            ) from None

    def images(self, root: str | Path | None = None, split: str | None = None) -> list[Path]:
        """Sorted image paths of `split` under `root`. FileNotFoundError names the expected folder."""
        if self.needs_root and root is None:
            raise DatasetSpecError(f"layout {self.name!r} needs a root folder")
        return self.find(Path(root) if root is not None else None, self.canonical_split(split))


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("folder", folder_images, ("all",), description="any folder of images, recursive"),
        Layout("landscape", folder_images, ("all",), description="Landscape pictures (flat folder)"),
        Layout("div2k", div2k_images, ("train", "valid"), aliases={"val": "valid", "test": "valid"},
               description="DIV2K_train_HR / DIV2K_valid_HR (the validation set serves as test set)"),
        Layout("flickr2k", flickr2k_images, ("all",), aliases={"train": "all"},
               description="Flickr2K_HR"),
        Layout("srbench", sr_benchmark_images, ("Set5", "Set14", "BSD100", "Urban100", "all"),
               aliases={"B100": "BSD100", "BSDS100": "BSD100"},
               description="Set5 / Set14 / BSD100 / Urban100 HR images, or all of them"),
        Layout("cyclegan", cyclegan_images, ("trainA", "trainB", "testA", "testB"),
               description="CycleGAN trainA/trainB/testA/testB (monet2photo, selfie2anime)"),
        Layout("intel", intel_images, ("train", "test", "pred"),
               description="Intel Image Classification seg_train / seg_test / seg_pred"),
        Layout("celeba", celeba_images, ("all", "train", "valid", "test"), aliases={"val": "valid"},
               center_crop=True, description="CelebA img_align_celeba (+ list_eval_partition)"),
        Layout("lfw", lfw_images, ("all",), center_crop=True,
               description="LFW lfw/<person>/*.jpg (also deep-funneled / funneled)"),
        Layout("demo", demo_images,
               ("attacker_photos", "victim_photos", "benchmark_photos", "paintings", "sr_benchmark", "victim_train",
                "victim_test"),
               aliases={"attacker": "attacker_photos", "victim": "victim_photos",
                        "benchmark": "benchmark_photos", "sr": "sr_benchmark"},
               needs_root=False, description="the demo set bundled with imgsteal"),
    )
}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: layout name, root folder (None for bundled data) and split."""

    layout: str
    root: Path | None
    split: str

    def images(self) -> list[Path]:
        """Sorted image paths this spec names."""
        return LAYOUTS[self.layout].images(self.root, self.split)

    def __str__(self) -> str:
        parts = [self.layout] + ([str(self.root)] if self.root is not None else []) + [self.split]
        return ":".join(parts)


def parse_spec(spec: str) -> DatasetSpec:
    """Parse `layout:path[:split]`, `layout:split` (bundled data, e.g. "demo:attacker") or a plain path.

    A string whose part before the first ':' is not a layout name is a plain folder (so Windows
    drive letters and paths with ':' still work). Raises DatasetSpecError for an unknown split.
    """
    head, sep, rest = spec.partition(":")
    layout = LAYOUTS.get(head.lower()) if sep else None
    if layout is None:
        if not spec:
            raise DatasetSpecError("empty dataset spec")
        return DatasetSpec("folder", Path(spec), "all")
    if not layout.needs_root:
        return DatasetSpec(layout.name, None, layout.canonical_split(rest))
    path, split = rest, None
    before, colon, tail = rest.rpartition(":")
    if colon and before:
        try:
            split = layout.canonical_split(tail)
            path = before
        except DatasetSpecError:
            if "/" not in tail and "\\" not in tail:  # looks like a split name, not part of a path
                raise
    if not path:
        raise DatasetSpecError(f"dataset spec {spec!r} lacks a path: use {layout.name}:PATH[:SPLIT]")
    return DatasetSpec(layout.name, Path(path), layout.canonical_split(split))


def resolve_images(spec: str) -> list[Path]:
    """Sorted image paths named by a dataset spec (see parse_spec). FileNotFoundError if not there."""
    return parse_spec(spec).images()


def resolve_image_specs(specs: list[str]) -> list[Path]:
    """The images of several folders or dataset specs, in order; ImgstealError when there are none."""
    from imgsteal.errors import ImgstealError

    paths = [path for spec in specs for path in resolve_images(spec)]
    if not paths:
        raise ImgstealError(f"no images found in {', '.join(specs)}")
    return paths


# --------------------------------------------------------------------------- face crops


def center_crop_resize(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Centre-crop to the aspect ratio of `size`, then resize to `size` (bicubic, antialiased).

    image: C x H x W or N x C x H x W in [0, 1]; size: side of a square or (height, width) in
    pixels. Returns the same rank, clamped to [0, 1]. Used for CelebA (178 x 218) and LFW faces.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    squeeze = image.dim() == 3
    x = image.unsqueeze(0) if squeeze else image
    h, w = x.shape[-2:]
    # Largest window of the target aspect ratio that fits.
    if w * out_h >= h * out_w:  # wider than the target: keep full height
        crop_h, crop_w = h, round(h * out_w / out_h)
    else:
        crop_h, crop_w = round(w * out_h / out_w), w
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    x = x[..., top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) != (out_h, out_w):
        x = F.interpolate(x, size=(out_h, out_w), mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp(0, 1)
    return x.squeeze(0) if squeeze else x
