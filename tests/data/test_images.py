"""imgsteal.data.images on real decoder edge cases, generated with PIL."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgsteal.data.images import (
    IMAGE_SUFFIXES,
    ImageReadError,
    bicubic_downscale,
    counting_skipped,
    decode_image,
    encode_png,
    list_images,
    load_image,
    load_images,
    save_image,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def rgb(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(3, 1, 1)


def encoded(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


# ----------------------------------------------------------------------------- modes


def test_grayscale_l_becomes_three_equal_channels():
    arr = np.array([[0, 51], [128, 255]], dtype=np.uint8)
    out = decode_image(encoded(Image.fromarray(arr, "L")))
    assert out.shape == (3, 2, 2) and out.dtype == torch.float32
    expected = torch.from_numpy(arr.astype(np.float32) / 255)
    for channel in out:
        assert torch.equal(channel, expected)


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red -> white
    img.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue -> blue
    img.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black -> mid grey
    out = decode_image(encoded(img))
    assert out.shape == (3, 1, 3)
    assert torch.equal(out[:, :, 0:1], rgb(1, 1, 1))
    assert torch.equal(out[:, :, 1:2], rgb(0, 0, 1))
    grey = 1 - 128 / 255
    assert torch.allclose(out[:, 0, 2], torch.full((3,), grey), atol=1 / 255)


def test_la_is_composited_on_white():
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (0, 0))  # transparent black -> white
    img.putpixel((1, 0), (100, 255))  # opaque grey stays
    out = decode_image(encoded(img))
    assert torch.equal(out[:, :, 0:1], rgb(1, 1, 1))
    assert torch.allclose(out[:, 0, 1], torch.full((3,), 100 / 255))


def _palette_image() -> Image.Image:
    img = Image.new("P", (3, 1))
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    img.putpalette(palette)
    for x in range(3):
        img.putpixel((x, 0), x)
    return img


def test_palette_without_transparency_maps_through_the_palette():
    out = decode_image(encoded(_palette_image()))
    assert torch.equal(out[:, 0, :], torch.eye(3))


def test_palette_with_transparency_index_becomes_white():
    data = encoded(_palette_image(), transparency=1)  # green entry transparent
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "P" and "transparency" in check.info
    out = decode_image(data)
    assert torch.equal(out[:, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.equal(out[:, 0, 1], torch.tensor([1.0, 1, 1]))
    assert torch.equal(out[:, 0, 2], torch.tensor([0.0, 0, 1]))


@pytest.mark.parametrize("mode, key", [("RGB", (0, 0, 0)), ("L", 0)])
def test_colour_key_transparency_is_composited_on_white(mode, key):
    img = Image.new(mode, (2, 1), key)
    img.putpixel((1, 0), (10, 20, 30) if mode == "RGB" else 10)
    out = decode_image(encoded(img, transparency=key))
    assert torch.equal(out[:, 0, 0], torch.ones(3))


def test_16_bit_png_scales_by_65535():
    arr = np.array([[0, 1000], [32768, 65535]], dtype=np.uint16)
    data = encoded(Image.fromarray(arr))
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")
    out = decode_image(data)
    expected = torch.from_numpy(arr.astype(np.float32) / 65535)
    assert torch.allclose(out[0], expected) and torch.equal(out[0], out[2])


def test_dark_16_bit_png_is_not_mistaken_for_8_bit():
    # Every value <= 255: still 16-bit data, so 200 means 200 / 65535, not 200 / 255.
    arr = np.array([[0, 200]], dtype=np.uint16)
    out = decode_image(encoded(Image.fromarray(arr)))
    assert out.max().item() == pytest.approx(200 / 65535)


def test_exif_orientation_6_rotates_the_content(tmp_path):
    # Stored 32 wide x 16 high, left half red, right half blue; orientation 6 = rotate 90 CW to view.
    img = Image.new("RGB", (32, 16), BLUE)
    img.paste(Image.new("RGB", (16, 16), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, quality=95, exif=exif.tobytes())
    out = load_image(path)
    assert out.shape == (3, 32, 16)  # width and height swapped
    top, bottom = out[:, 2:14, 2:14].mean(dim=(1, 2)), out[:, 18:30, 2:14].mean(dim=(1, 2))
    assert torch.allclose(top, torch.tensor([1.0, 0, 0]), atol=0.06)  # stored left is now on top
    assert torch.allclose(bottom, torch.tensor([0.0, 0, 1]), atol=0.06)


@pytest.mark.parametrize("suffix, params", [(".webp", {"lossless": True}), (".bmp", {})])
def test_webp_and_bmp_load_exactly(tmp_path, suffix, params):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(arr).save(path, **params)
    out = load_image(path)
    assert torch.equal(out, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    assert list_images(tmp_path) == [path]


# ----------------------------------------------------------------------------- broken files


def _broken_files(folder: Path) -> dict[str, Path]:
    good = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    jpeg, png = encoded(good, "JPEG", quality=90), encoded(good, "PNG")
    files = {
        "truncated_jpeg": folder / "cut.jpg",
        "truncated_png": folder / "cut.png",
        "not_an_image": folder / "notes.png",
    }
    files["truncated_jpeg"].write_bytes(jpeg[: len(jpeg) // 2])
    files["truncated_png"].write_bytes(png[: len(png) // 2])
    files["not_an_image"].write_text("this is text, not pixels")
    return files


@pytest.mark.parametrize("kind", ["truncated_jpeg", "truncated_png", "not_an_image"])
def test_load_image_raises_image_read_error_naming_the_file(tmp_path, kind):
    path = _broken_files(tmp_path)[kind]
    with pytest.raises(ImageReadError, match=path.name):
        load_image(path)


def test_missing_file_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="absent.png"):
        load_image(tmp_path / "absent.png")


def test_decode_image_error_uses_the_given_name():
    with pytest.raises(ImageReadError, match="upload-7"):
        decode_image(b"\x89PNG\r\n\x1a\n garbage", name="upload-7")


def test_load_images_skips_broken_files_with_one_clean_line_each_and_keeps_the_rest(tmp_path, capsys):
    broken = _broken_files(tmp_path)
    good = [tmp_path / "a.png", tmp_path / "sub" / "b.jpg"]
    for path in good:
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 3), RED).save(path)
    (tmp_path / "README.txt").write_text("not an image by extension")
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught, counting_skipped() as skipped:
        warnings.simplefilter("always")
        loaded = load_images(list_images(tmp_path))
    assert [path for path, _ in loaded] == sorted(good)
    assert all(image.shape == (3, 3, 4) for _, image in loaded)
    assert not caught  # no Python warnings machinery
    lines = capsys.readouterr().err.splitlines()
    skipped_lines = [line for line in lines if line.startswith("skipped ")]
    assert len(skipped_lines) == len(broken)
    for path in broken.values():
        assert sum(str(path) in line for line in skipped_lines) == 1, path.name
    for line in skipped_lines:
        assert "not a readable image" in line and "object at 0x" not in line and "warn" not in line.lower()
    assert [line for line in lines if line.startswith("left out")] == [
        f"left out 1 file(s) under {tmp_path} that are not images by extension"
        f" ({', '.join(IMAGE_SUFFIXES)}): README.txt"]
    assert len(lines) == len(broken) + 1
    assert skipped.counts() == {"unreadable": len(broken), "not_images": 1}
    assert set(skipped.unreadable) == {str(p) for p in broken.values()}


def test_decode_errors_carry_no_object_reprs():
    with pytest.raises(ImageReadError) as info:
        decode_image(b"plain text, not pixels", name="upload-8")
    assert str(info.value) == "upload-8: not a readable image (unknown format or not an image)"


# ----------------------------------------------------------------------------- encode / resize


def test_encode_png_decode_round_trip_is_exact_for_8_bit_content():
    arr = np.random.default_rng(2).integers(0, 256, size=(3, 9, 11), dtype=np.uint8)
    image = torch.from_numpy(arr).float() / 255
    data = encode_png(image)
    assert data.startswith(b"\x89PNG")
    assert torch.equal(decode_image(data), image)


def test_encode_png_clips_and_rounds():
    image = torch.tensor([-0.5, 0.5, 1.7]).view(3, 1, 1)
    assert torch.equal(decode_image(encode_png(image)), rgb(0, 128 / 255, 1))


def test_save_image_round_trip(tmp_path):
    image = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (3, 4, 5))).float() / 255
    path = tmp_path / "nested" / "out.png"
    save_image(image, path)
    assert torch.equal(load_image(path), image)


def test_bicubic_downscale_crops_to_multiples_of_the_scale():
    image = torch.rand(3, 10, 13)
    out = bicubic_downscale(image, 4)
    assert out.shape == (3, 2, 3)
    # The cropped border must not matter: same result as downscaling the 8 x 12 crop.
    assert torch.equal(out, bicubic_downscale(image[:, :8, :12], 4))
    batch = bicubic_downscale(torch.rand(2, 3, 17, 9), 2)
    assert batch.shape == (2, 3, 8, 4)
    assert 0 <= batch.min() and batch.max() <= 1


def test_bicubic_downscale_keeps_flat_colour_and_rejects_tiny_images():
    flat = torch.full((3, 8, 8), 0.25)
    assert torch.allclose(bicubic_downscale(flat, 4), torch.full((3, 2, 2), 0.25), atol=1e-6)
    with pytest.raises(ValueError, match="smaller than the scale"):
        bicubic_downscale(torch.rand(3, 3, 8), 4)
