"""Dataset folder layouts, built in tmp_path with tiny generated images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from imgsteal.data import layouts
from imgsteal.data.layouts import (
    LAYOUTS,
    DatasetSpecError,
    center_crop_resize,
    parse_spec,
    resolve_images,
)


def make(path: Path, size: tuple[int, int] = (8, 6), color=(200, 30, 30)) -> Path:
    """Write a tiny solid image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# ----------------------------------------------------------------------------- plain folders


def test_folder_is_recursive_sorted_and_filters_suffixes(tmp_path):
    for rel in ["b.png", "a.jpg", "sub/c.JPEG", "sub/deeper/d.webp", "e.bmp"]:
        make(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "f.gif").write_bytes(b"GIF89a")
    found = resolve_images(str(tmp_path))
    assert sorted(found) == found
    assert set(names(found)) == {"a.jpg", "b.png", "c.JPEG", "d.webp", "e.bmp"}
    assert resolve_images(f"folder:{tmp_path}") == found
    assert resolve_images(f"landscape:{tmp_path}") == found


def test_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_images(str(missing))


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no image files .* under .*empty"):
        resolve_images(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------- super-resolution


@pytest.fixture
def div2k(tmp_path):
    root = tmp_path / "DIV2K"
    for i in (1, 2):
        make(root / "DIV2K_train_HR" / f"{i:04d}.png")
        make(root / "DIV2K_train_LR_bicubic" / "X4" / f"{i:04d}x4.png")
    make(root / "DIV2K_valid_HR" / "0801.png")
    make(root / "DIV2K_valid_LR_bicubic" / "X4" / "0801x4.png")
    return root


def test_div2k_from_root_and_from_split_folder(div2k):
    train = resolve_images(f"div2k:{div2k}")
    assert names(train) == ["0001.png", "0002.png"]
    assert all(p.parent.name == "DIV2K_train_HR" for p in train)
    assert names(resolve_images(f"div2k:{div2k}:valid")) == ["0801.png"]
    assert names(resolve_images(f"div2k:{div2k}:test")) == ["0801.png"]
    assert resolve_images(f"div2k:{div2k / 'DIV2K_train_HR'}") == train
    assert resolve_images(f"div2k:{div2k.parent}:train") == train  # root/DIV2K/DIV2K_train_HR


def test_div2k_missing_split_names_expected_folder(tmp_path):
    make(tmp_path / "DIV2K_train_HR" / "0001.png")
    with pytest.raises(FileNotFoundError, match="DIV2K_valid_HR"):
        resolve_images(f"div2k:{tmp_path}:valid")


def test_flickr2k_both_layouts(tmp_path):
    make(tmp_path / "a" / "Flickr2K_HR" / "000001.png")
    make(tmp_path / "a" / "Flickr2K_LR_bicubic" / "X4" / "000001x4.png")
    make(tmp_path / "b" / "Flickr2K" / "Flickr2K_HR" / "000002.png")
    assert names(resolve_images(f"flickr2k:{tmp_path / 'a'}")) == ["000001.png"]
    assert names(resolve_images(f"flickr2k:{tmp_path / 'b'}")) == ["000002.png"]
    with pytest.raises(FileNotFoundError, match="Flickr2K_HR"):
        resolve_images(f"flickr2k:{tmp_path}")


def test_sr_benchmarks_take_hr_images_only(tmp_path):
    root = tmp_path / "benchmark"
    # EDSR layout: Set5/HR + Set5/LR_bicubic/X4.
    for stem in ("baby", "bird"):
        make(root / "Set5" / "HR" / f"{stem}.png")
        make(root / "Set5" / "LR_bicubic" / "X4" / f"{stem}x4.png")
    # BasicSR layout: Set14/GTmod12 + Set14/LRbicx4.
    make(root / "Set14" / "GTmod12" / "comic.png")
    make(root / "Set14" / "LRbicx4" / "comic.png")
    # SelfExSR layout: Urban100/image_SRF_{2,4}/img_XXX_SRF_k_{HR,LR,bicubic}.png.
    for k in (2, 4):
        for kind in ("HR", "LR", "bicubic", "SelfExSR"):
            make(root / "Urban100" / f"image_SRF_{k}" / f"img_001_SRF_{k}_{kind}.png")
    # Flat folder mixing HR and LR copies.
    make(root / "B100" / "3096.png")
    make(root / "B100" / "3096x4.png")
    make(root / "B100" / "8023_LR.png")

    assert names(resolve_images(f"srbench:{root}:Set5")) == ["baby.png", "bird.png"]
    assert names(resolve_images(f"srbench:{root}:set14")) == ["comic.png"]
    assert resolve_images(f"srbench:{root}:Set14")[0].parent.name == "GTmod12"
    assert names(resolve_images(f"srbench:{root}:Urban100")) == ["img_001_SRF_4_HR.png"]
    assert names(resolve_images(f"srbench:{root}:BSD100")) == ["3096.png"]
    everything = resolve_images(f"srbench:{root}:all")
    assert len(everything) == 2 + 1 + 1 + 1
    assert not any("LR" in p.parts[-2] or "x4" in p.stem or "_LR" in p.stem for p in everything)
    # The benchmark folder itself also works.
    assert names(resolve_images(f"srbench:{root / 'Set5'}:Set5")) == ["baby.png", "bird.png"]


def test_sr_benchmark_missing_names_expected_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="Set5"):
        resolve_images(f"srbench:{tmp_path}:Set5")
    with pytest.raises(FileNotFoundError, match="Set5, Set14, BSD100 and Urban100"):
        resolve_images(f"srbench:{tmp_path}:all")


def test_sr_benchmark_all_refuses_a_partial_benchmark_and_names_the_missing_one(tmp_path):
    # Three of the four benchmarks: 'all' must not quietly score a smaller SRBenchmark.
    for name in ("Set5", "Set14", "Urban100"):
        make(tmp_path / name / "HR" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"missing: BSD100 \(") as caught:
        resolve_images(f"srbench:{tmp_path}:all")
    message = str(caught.value)
    assert "Set5 (" not in message and "Urban100 (" not in message  # only the missing one is listed
    assert f"srbench:{tmp_path}:Set5" in message  # and how to go on with what is there
    make(tmp_path / "BSD100" / "HR" / "b.png")
    assert len(resolve_images(f"srbench:{tmp_path}:all")) == 4


def test_low_res_name_rules():
    assert layouts.is_low_res_name(Path("0001x4.png"))
    assert layouts.is_low_res_name(Path("baby_LR.png"))
    assert layouts.is_low_res_name(Path("img_001_SRF_4_bicubic.png"))
    assert not layouts.is_low_res_name(Path("img_001_SRF_4_HR.png"))
    assert not layouts.is_low_res_name(Path("box4.png"))  # a name, not a scale suffix
    kept = layouts.drop_low_res([Path("a/box.png"), Path("a/boxx4.png"), Path("a/max4.png")])
    assert names(kept) == ["box.png", "max4.png"]


# ----------------------------------------------------------------------------- style transfer


def test_cyclegan_splits(tmp_path):
    root = tmp_path / "monet2photo"
    for split in ("trainA", "trainB", "testA", "testB"):
        make(root / split / f"{split}_1.jpg")
    for split in ("trainA", "trainB", "testA", "testB"):
        assert names(resolve_images(f"cyclegan:{root}:{split}")) == [f"{split}_1.jpg"]
    assert names(resolve_images(f"cyclegan:{root}")) == ["trainA_1.jpg"]  # default split
    assert names(resolve_images(f"cyclegan:{root / 'testB'}:testB")) == ["testB_1.jpg"]
    with pytest.raises(DatasetSpecError, match="trainA, trainB, testA, testB"):
        resolve_images(f"cyclegan:{root}:trainC")


def test_cyclegan_missing_split_names_expected_folder(tmp_path):
    make(tmp_path / "selfie2anime" / "trainA" / "1.jpg")
    with pytest.raises(FileNotFoundError, match=r"selfie2anime[/\\]testB"):
        resolve_images(f"cyclegan:{tmp_path / 'selfie2anime'}:testB")


@pytest.mark.parametrize("doubled", [True, False])
def test_intel_with_and_without_doubled_folder(tmp_path, doubled):
    for split in ("train", "test"):
        base = tmp_path / f"seg_{split}" / (f"seg_{split}" if doubled else "")
        for cls in ("forest", "sea"):
            make(base / cls / f"{split}_{cls}.jpg")
    make(tmp_path / "seg_pred" / "seg_pred" / "9.jpg")
    train = resolve_images(f"intel:{tmp_path}")
    assert names(train) == ["train_forest.jpg", "train_sea.jpg"]
    assert [p.parent.name for p in train] == ["forest", "sea"]
    assert names(resolve_images(f"intel:{tmp_path}:test")) == ["test_forest.jpg", "test_sea.jpg"]
    assert names(resolve_images(f"intel:{tmp_path}:pred")) == ["9.jpg"]
    assert resolve_images(f"intel:{tmp_path / 'seg_train'}:train") == train


def test_intel_missing_names_expected_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="seg_test"):
        resolve_images(f"intel:{tmp_path}:test")


# ----------------------------------------------------------------------------- faces


@pytest.fixture
def celeba(tmp_path):
    root = tmp_path / "celeba"
    for i in range(1, 6):
        make(root / "img_align_celeba" / f"{i:06d}.jpg", size=(18, 22))
    lines = ["000001.jpg 0", "000002.jpg 0", "000003.jpg 1", "000004.jpg 2", "000005.jpg 2"]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_all_and_partitions(celeba):
    assert len(resolve_images(f"celeba:{celeba}")) == 5
    assert names(resolve_images(f"celeba:{celeba}:train")) == ["000001.jpg", "000002.jpg"]
    assert names(resolve_images(f"celeba:{celeba}:valid")) == ["000003.jpg"]
    assert names(resolve_images(f"celeba:{celeba}:test")) == ["000004.jpg", "000005.jpg"]
    # The image folder itself, with the partition list one level up.
    inner = resolve_images(f"celeba:{celeba / 'img_align_celeba'}:train")
    assert names(inner) == ["000001.jpg", "000002.jpg"]


def test_celeba_kaggle_layout_with_csv_partitions(tmp_path):
    root = tmp_path / "celeba-dataset"
    for i in (1, 2, 3):
        make(root / "img_align_celeba" / "img_align_celeba" / f"{i:06d}.jpg")
    (root / "list_eval_partition.csv").write_text(
        "image_id,partition\n000001.jpg,0\n000002.jpg,2\n000003.jpg,0\n"
    )
    assert names(resolve_images(f"celeba:{root}:train")) == ["000001.jpg", "000003.jpg"]


def test_celeba_split_without_partition_list_names_the_file(tmp_path):
    make(tmp_path / "img_align_celeba" / "000001.jpg")
    assert len(resolve_images(f"celeba:{tmp_path}")) == 1
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        resolve_images(f"celeba:{tmp_path}:train")
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        resolve_images(f"celeba:{tmp_path / 'img_align_celeba' / 'x'}")


@pytest.mark.parametrize("folder", ["lfw", "lfw-deepfunneled", "lfw_funneled"])
def test_lfw_variants(tmp_path, folder):
    for person, n in (("Aaron_Peirsol", 2), ("Zico", 1)):
        for i in range(1, n + 1):
            make(tmp_path / folder / person / f"{person}_{i:04d}.jpg", size=(25, 25))
    found = resolve_images(f"lfw:{tmp_path}")
    assert names(found) == ["Aaron_Peirsol_0001.jpg", "Aaron_Peirsol_0002.jpg", "Zico_0001.jpg"]
    assert resolve_images(f"lfw:{tmp_path / folder}") == found


def test_lfw_missing_lists_expected_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="lfw-deepfunneled"):
        resolve_images(f"lfw:{tmp_path}")


def test_center_crop_resize_celeba_shape_keeps_the_centre():
    # 218 x 178 (H x W) like CelebA: red centre square, blue bands top and bottom.
    image = torch.zeros(3, 218, 178)
    image[2] = 1.0
    image[:, 20:198, :] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    out = center_crop_resize(image, 64)
    assert out.shape == (3, 64, 64)
    assert torch.allclose(out, torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 64, 64), atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1


def test_center_crop_resize_batches_and_rectangles():
    batch = torch.rand(2, 3, 40, 100)
    out = center_crop_resize(batch, (20, 30))
    assert out.shape == (2, 3, 20, 30)
    # Same size and aspect: only the crop happens, so the centre window comes back exactly.
    same = center_crop_resize(batch, (40, 60))
    assert torch.equal(same, batch[..., :, 20:80])
    with pytest.raises(ValueError):
        center_crop_resize(batch, 0)


def test_face_layouts_ask_for_centre_crop():
    assert LAYOUTS["celeba"].center_crop and LAYOUTS["lfw"].center_crop
    assert not LAYOUTS["cyclegan"].center_crop


# ----------------------------------------------------------------------------- specs and registry


def test_demo_layout_needs_no_root():
    assert len(resolve_images("demo:attacker")) == 59
    assert len(resolve_images("demo:sr_benchmark")) == 16
    assert parse_spec("demo:").split == "attacker_photos"  # the default split
    assert parse_spec("demo").layout == "folder"  # no colon: a folder called demo


def test_parse_spec_forms(tmp_path):
    assert parse_spec(f"div2k:{tmp_path}:val") == layouts.DatasetSpec("div2k", tmp_path, "valid")
    assert parse_spec(f"DIV2K:{tmp_path}") == layouts.DatasetSpec("div2k", tmp_path, "train")
    assert parse_spec(str(tmp_path)) == layouts.DatasetSpec("folder", tmp_path, "all")
    assert parse_spec("demo:victim") == layouts.DatasetSpec("demo", None, "victim_photos")
    # An unknown prefix is part of a path, not a layout.
    assert parse_spec("C:/data/photos").layout == "folder"
    assert str(parse_spec(f"cyclegan:{tmp_path}:testa")) == f"cyclegan:{tmp_path}:testA"


def test_parse_spec_errors(tmp_path):
    with pytest.raises(DatasetSpecError, match="lacks a path"):
        parse_spec("div2k:")
    with pytest.raises(DatasetSpecError, match="no split 'vaild'"):
        parse_spec(f"div2k:{tmp_path}:vaild")
    with pytest.raises(DatasetSpecError, match="no split"):
        parse_spec("demo:nothing")
    with pytest.raises(DatasetSpecError):
        parse_spec("")


def test_registry_covers_the_paper_datasets():
    paper = {"folder", "landscape", "div2k", "flickr2k", "srbench", "cyclegan", "intel", "celeba", "lfw"}
    assert paper <= set(LAYOUTS)
    for layout in LAYOUTS.values():
        assert layout.splits and layout.description
