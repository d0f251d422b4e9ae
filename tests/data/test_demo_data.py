"""The bundled demo set: complete, licensed, loadable, and independent of /work/shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsteal.data import demo
from imgsteal.data.images import list_images, load_image

# Counts from demo_data/README.md.
README_COUNTS = {
    "victim_photos": 62,
    "attacker_photos": 59,
    "benchmark_photos": 18,
    "paintings": 31,
    "sr_benchmark": 16,
}


def _all_images(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in list_images(root) if "LICENSES" not in p.parts}


def test_demo_root_is_inside_the_package():
    root = demo.demo_root()
    package_dir = Path(demo.__file__).resolve().parents[1]
    assert root.resolve() == (package_dir / "demo_data").resolve()
    assert "shared" not in root.resolve().parts


def test_split_folders_have_the_readme_counts():
    data = demo.demo_data()
    for name, count in README_COUNTS.items():
        folder = data.split(name)
        assert folder.is_dir()
        assert len(list_images(folder)) == count, name
    assert len(_all_images(data.root)) == sum(README_COUNTS.values()) == 186


def test_unknown_split_name_is_rejected():
    with pytest.raises(KeyError, match="victim_photos"):
        demo.demo_data().split("victims")


def test_every_image_has_exactly_one_manifest_row_and_back():
    rows = demo.manifest()
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "duplicate manifest rows"
    assert set(paths) == _all_images(demo.demo_root())


def test_manifest_sizes_match_the_files():
    root = demo.demo_root()
    for row in demo.manifest()[::15]:  # a sample keeps this fast; all rows share one code path
        image = load_image(root / row["path"])
        assert image.shape == (3, row["height"], row["width"]), row["path"]


def test_sr_benchmark_sides_are_multiples_of_four():
    for row in demo.manifest():
        if row["path"].startswith("sr/benchmark/"):
            assert row["width"] % 4 == 0 and row["height"] % 4 == 0, row["path"]


def test_every_manifest_license_maps_to_license_files():
    for row in demo.manifest():
        files = demo.license_files(row["license"])
        assert files, row["path"]
        for path in files:
            assert path.is_file() and path.stat().st_size > 500, path


def test_every_license_file_is_used_and_documented():
    folder = demo.demo_root() / demo.LICENSES_DIR
    used = {path.name for row in demo.manifest() for path in demo.license_files(row["license"])}
    present = {p.name for p in folder.iterdir() if p.name != "README.md"}
    assert used == present
    index = (folder / "README.md").read_text(encoding="utf-8")
    for name in present:
        assert f"`{name}`" in index, name


@pytest.mark.parametrize(
    "license_field, expected",
    [
        ("CC-BY-SA-4.0", {"CC-BY-SA-4.0.txt"}),
        ("CC-BY-4.0", {"CC-BY-4.0.txt"}),
        ("LGPL-3.0", {"LGPL-3.0.txt", "GPL-3.0.txt"}),
        ("GPL-2+", {"GPL-2.0.txt"}),
        ("Apache-2.0 AND BSD-3-Clause", {"Apache-2.0.txt", "BSD-3-Clause-OpenCV.txt"}),
    ],
)
def test_license_rules_do_not_overlap(license_field, expected):
    assert {p.name for p in demo.license_files(license_field)} == expected


def test_unknown_license_raises():
    with pytest.raises(ValueError, match="WTFPL"):
        demo.license_files("WTFPL")


def test_license_texts_are_the_full_texts():
    folder = demo.demo_root() / demo.LICENSES_DIR
    checks = {
        "GPL-2.0.txt": "GNU GENERAL PUBLIC LICENSE",
        "GPL-3.0.txt": "END OF TERMS AND CONDITIONS",
        "LGPL-3.0.txt": "GNU LESSER GENERAL PUBLIC LICENSE",
        "Apache-2.0.txt": "END OF TERMS AND CONDITIONS",
        "GFDL-1.3.txt": "GNU Free Documentation License",
        "CC-BY-2.0.txt": "Attribution 2.0",
        "CC-BY-3.0.txt": "Attribution 3.0 Unported",
        "CC-BY-4.0.txt": "Section 8 – Interpretation.",
        "CC-BY-SA-4.0.txt": "Section 8 -- Interpretation.",
        "BSD-3-Clause-OpenCV.txt": "Intel Corporation",
        "PolyForm-Noncommercial-1.0.0.txt": "PolyForm Noncommercial License 1.0.0",
    }
    for name, marker in checks.items():
        assert marker in (folder / name).read_text(encoding="utf-8"), name


def test_attribution_points_to_manifest_and_licenses():
    text = (demo.demo_root() / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "MANIFEST.csv" in text and "LICENSES/" in text


def test_package_code_never_reads_work_shared():
    src = Path(demo.__file__).resolve().parents[1]
    offenders = [p for p in src.rglob("*.py") if "/work/shared" in p.read_text(encoding="utf-8")]
    assert offenders == []
