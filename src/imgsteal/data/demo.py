"""The small demo image set that ships inside the package (src/imgsteal/demo_data).

It is split by role in the model-extraction setting: the victim's training photos, the
adversary's query photos, held-out benchmark photos, the secret style set (paintings) and
high-resolution references for 4x super-resolution. MANIFEST.csv records source and license
for every image; LICENSES/ holds the texts those licenses require on redistribution.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from imgsteal.errors import ImgstealError

MANIFEST_NAME = "MANIFEST.csv"
LICENSES_DIR = "LICENSES"

# Split name -> folder under demo_data. The split names are also the `demo:<split>` dataset specs.
DEMO_SPLITS = {
    "victim_photos": "photos/victim",
    "attacker_photos": "photos/attacker",
    "benchmark_photos": "photos/benchmark",
    "paintings": "paintings",
    "sr_benchmark": "sr/benchmark",
}

# Manifest license field -> license files that must travel with the image. Fields are free text
# (they quote where the license was read), so each rule matches one license it names; a field
# naming several licenses (e.g. "Apache-2.0 AND BSD-3-Clause") collects all of their files.
_LICENSE_RULES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(pattern), files)
    for pattern, files in (
        (r"(?i)public domain", ("Public-Domain.txt",)),
        (r"\bCC0-1\.0\b", ("CC0-1.0.txt",)),
        (r"\bCC-BY-2\.0\b", ("CC-BY-2.0.txt",)),
        (r"\bCC-BY-3\.0\b", ("CC-BY-3.0.txt",)),
        (r"\bCC-BY-4\.0\b", ("CC-BY-4.0.txt",)),
        (r"\bCC-BY-SA-4\.0\b", ("CC-BY-SA-4.0.txt",)),
        (r"(?<![A-Za-z])GPL-2", ("GPL-2.0.txt",)),
        (r"(?<![A-Za-z])GPL-3", ("GPL-3.0.txt",)),
        # The LGPL-3.0 is a set of extra permissions on top of the GPL-3.0: both texts are needed.
        (r"\bLGPL-3", ("LGPL-3.0.txt", "GPL-3.0.txt")),
        # A GFDL notice without a version lets the recipient pick any published version (GFDL s. 10).
        (r"\bGFDL\b", ("GFDL-1.3.txt",)),
        (r"\bApache-2\.0\b", ("Apache-2.0.txt",)),
        (r"Apache-2\.0 AND BSD-3-Clause", ("BSD-3-Clause-OpenCV.txt",)),
        (r"sporco package BSD-3-Clause", ("BSD-3-Clause-sporco.txt",)),
        (r"\bKodak test image\b", ("Kodak.txt",)),
        (r"PolyForm-Noncommercial-1\.0\.0", ("PolyForm-Noncommercial-1.0.0.txt",)),
        (r"\bWaterloo BragZone\b", ("Waterloo-BragZone.txt",)),
    )
)


@dataclass(frozen=True)
class DemoData:
    """Folders of the bundled demo set (absolute paths; images inside are JPEG or PNG).

    victim_photos: 62 photos the victim trains on; attacker_photos: 59 query photos of the
    adversary; benchmark_photos: 18 held-out photos; paintings: 31 style images S_X;
    sr_benchmark: 16 PNG references for 4x super-resolution (sides multiples of 4).
    """

    root: Path
    victim_photos: Path
    attacker_photos: Path
    benchmark_photos: Path
    paintings: Path
    sr_benchmark: Path

    def split(self, name: str) -> Path:
        """Folder of one split by its name (a key of DEMO_SPLITS). Raises KeyError otherwise."""
        if name not in DEMO_SPLITS:
            raise KeyError(f"unknown demo split {name!r}; choose one of {', '.join(DEMO_SPLITS)}")
        return getattr(self, name)


def demo_root() -> Path:
    """Absolute path of the bundled demo_data folder. Raises ImgstealError if it is not installed."""
    root = Path(str(resources.files("imgsteal") / "demo_data"))
    if not (root / MANIFEST_NAME).is_file():
        raise ImgstealError(
            f"the demo data is missing from the installed package (expected {root / MANIFEST_NAME}); "
            "reinstall imgsteal from a source tree or wheel that includes demo_data/"
        )
    return root


def demo_data() -> DemoData:
    """The demo set's split folders, checked to exist. Raises ImgstealError if one is missing."""
    root = demo_root()
    folders = {name: root / sub for name, sub in DEMO_SPLITS.items()}
    missing = [str(path) for path in folders.values() if not path.is_dir()]
    if missing:
        raise ImgstealError(f"demo data folders missing: {', '.join(missing)}")
    return DemoData(root=root, **folders)


def manifest() -> list[dict[str, str | int]]:
    """Rows of MANIFEST.csv, one per image, in file order.

    Keys: path (relative to demo_root(), '/'-separated), source_package, registry, original_file,
    license, credit (str) and width, height (int, pixels).
    """
    with open(demo_root() / MANIFEST_NAME, newline="", encoding="utf-8") as handle:
        rows: list[dict[str, str | int]] = list(csv.DictReader(handle))
    for row in rows:
        row["width"] = int(row["width"])
        row["height"] = int(row["height"])
    return rows


def license_files(license_field: str) -> list[Path]:
    """License texts (absolute paths in LICENSES/) required for a manifest `license` value.

    Raises ValueError when the value names no license this bundle carries a text for.
    """
    names: list[str] = []
    for pattern, files in _LICENSE_RULES:
        if pattern.search(license_field):
            names.extend(name for name in files if name not in names)
    if not names:
        raise ValueError(f"no license text in {LICENSES_DIR}/ matches the license {license_field!r}")
    folder = demo_root() / LICENSES_DIR
    return [folder / name for name in names]
