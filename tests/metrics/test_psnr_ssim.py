"""PSNR and SSIM: values against scikit-image, shapes, edge cases, crop_border and y_channel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imgsteal.metrics._color import map_chunks, rgb_to_y
from imgsteal.metrics.psnr import psnr
from imgsteal.metrics.ssim import ssim

skimage_metrics = pytest.importorskip("skimage.metrics")

TOL = 1e-4  # the agreement goal with scikit-image


def random_pair(n: int, c: int, h: int, w: int, seed: int = 0, dtype=torch.float32):
    """Uniform noise images and a noisy copy, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=gen, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def smooth_pair(n: int, c: int, h: int, w: int, seed: int = 0, dtype=torch.float32):
    """Smooth images (upsampled 4 x 4 noise: tiny local variance, the hard case for float32) and a
    slightly perturbed copy."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, c, 4, 4, generator=gen, dtype=torch.float64)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    x = x.clamp(0, 1)
    y = (x + 0.01 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


def ref_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    """scikit-image SSIM per image, the settings of Wang et al. named in the issue."""
    return np.array(
        [
            skimage_metrics.structural_similarity(
                to_hwc(a),
                to_hwc(b),
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=data_range,
            )
            for a, b in zip(x, y)
        ]
    )


def ref_psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    psnr_one = skimage_metrics.peak_signal_noise_ratio
    return np.array([psnr_one(to_hwc(a), to_hwc(b), data_range=data_range) for a, b in zip(x, y)])


def numpy_luma(t: torch.Tensor) -> torch.Tensor:
    """BT.601 Y of [0, 1] RGB the MATLAB rgb2ycbcr way, written out independently: N x 1 x H x W."""
    rgb = t.double().numpy()
    luma = 16.0 / 255.0 + (65.481 * rgb[:, 0] + 128.553 * rgb[:, 1] + 24.966 * rgb[:, 2]) / 255.0
    return torch.from_numpy(luma[:, None])


@pytest.mark.parametrize("make_pair", [random_pair, smooth_pair], ids=["random", "smooth"])
@pytest.mark.parametrize("shape", [(3, 3, 48, 48), (2, 3, 37, 61), (2, 1, 11, 30)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_values_match_skimage(make_pair, shape, dtype):
    x, y = make_pair(*shape, dtype=dtype)
    tol = TOL if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(ssim(x, y).numpy(), ref_ssim(x, y), rtol=0, atol=tol)
    np.testing.assert_allclose(psnr(x, y).numpy(), ref_psnr(x, y), rtol=0, atol=tol)


def test_values_match_skimage_on_a_large_batch_of_larger_images():
    # 256 x 256 takes the one-plane-per-chunk path and the threaded chunk scheduling on CPU.
    x, y = random_pair(4, 3, 256, 200, seed=3)
    np.testing.assert_allclose(ssim(x, y).numpy(), ref_ssim(x, y), rtol=0, atol=TOL)
    np.testing.assert_allclose(psnr(x, y).numpy(), ref_psnr(x, y), rtol=0, atol=TOL)


@pytest.mark.parametrize("make_pair", [random_pair, smooth_pair], ids=["random", "smooth"])
def test_crop_border_matches_skimage_on_cropped_images(make_pair):
    x, y = make_pair(2, 3, 40, 52, seed=1)
    b = 4
    xc, yc = x[..., b:-b, b:-b], y[..., b:-b, b:-b]
    np.testing.assert_allclose(ssim(x, y, crop_border=b).numpy(), ref_ssim(xc, yc), rtol=0, atol=TOL)
    np.testing.assert_allclose(psnr(x, y, crop_border=b).numpy(), ref_psnr(xc, yc), rtol=0, atol=TOL)


def test_crop_border_ignores_differences_in_the_border():
    x, _ = random_pair(2, 3, 40, 40)
    y = x.clone()
    y[..., :8, :] = 1 - y[..., :8, :]
    y[..., :, -8:] = 0
    assert (psnr(x, y) < 15).all() and (ssim(x, y) < 0.9).all()
    assert torch.isinf(psnr(x, y, crop_border=8)).all()
    assert torch.equal(ssim(x, y, crop_border=8), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("make_pair", [random_pair, smooth_pair], ids=["random", "smooth"])
@pytest.mark.parametrize("crop", [0, 4])
def test_y_channel_matches_skimage_on_independently_computed_luma(make_pair, crop):
    x, y = make_pair(2, 3, 44, 36, seed=2)
    yx, yy = numpy_luma(x), numpy_luma(y)
    if crop:
        yx, yy = yx[..., crop:-crop, crop:-crop], yy[..., crop:-crop, crop:-crop]
    got_ssim = ssim(x, y, crop_border=crop, y_channel=True).numpy()
    got_psnr = psnr(x, y, crop_border=crop, y_channel=True).numpy()
    np.testing.assert_allclose(got_ssim, ref_ssim(yx, yy), rtol=0, atol=TOL)
    np.testing.assert_allclose(got_psnr, ref_psnr(yx, yy), rtol=0, atol=TOL)
    # Luma is not one of the RGB channels' averages: the value differs from the RGB metric.
    assert not np.allclose(got_ssim, ssim(x, y, crop_border=crop).numpy(), atol=1e-3)


def test_luma_of_known_colours():
    black, white, red, green = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    rgb = torch.tensor([black, white, red, green]).view(4, 3, 1, 1)
    expected = torch.tensor([16.0, 235.0, 16.0 + 65.481, 16.0 + 128.553]) / 255.0
    torch.testing.assert_close(rgb_to_y(rgb).flatten(), expected, rtol=0, atol=1e-6)
    luma_255 = rgb_to_y(rgb * 255, data_range=255).flatten()
    torch.testing.assert_close(luma_255, expected * 255, rtol=0, atol=1e-4)


def test_y_channel_needs_rgb():
    x, y = random_pair(1, 1, 16, 16)
    with pytest.raises(ValueError, match="y_channel"):
        ssim(x, y, y_channel=True)
    with pytest.raises(ValueError, match="y_channel"):
        psnr(x, y, y_channel=True)


def test_data_range_255_matches_skimage():
    x, y = random_pair(2, 3, 24, 24, seed=4, dtype=torch.float64)
    x, y = (x * 255).round(), (y * 255).round()
    np.testing.assert_allclose(ssim(x, y, data_range=255).numpy(), ref_ssim(x, y, 255), rtol=0, atol=1e-9)
    np.testing.assert_allclose(psnr(x, y, data_range=255).numpy(), ref_psnr(x, y, 255), rtol=0, atol=1e-9)
    # uint8 tensors are accepted too (computed in float32).
    x8, y8 = x.to(torch.uint8), y.to(torch.uint8)
    np.testing.assert_allclose(ssim(x8, y8, data_range=255).numpy(), ref_ssim(x, y, 255), rtol=0, atol=TOL)
    np.testing.assert_allclose(psnr(x8, y8, data_range=255).numpy(), ref_psnr(x, y, 255), rtol=0, atol=TOL)


def test_one_value_per_image():
    x, y = random_pair(5, 3, 20, 24)
    for metric in (psnr, ssim):
        out = metric(x, y)
        assert out.shape == (5,) and out.dtype == torch.float64
        # Each value is that image's own: computing image by image gives the same numbers.
        single = torch.cat([metric(x[i], y[i]) for i in range(5)])
        torch.testing.assert_close(out, single, rtol=0, atol=1e-12)
        assert len(set(out.tolist())) == 5


def test_chw_input_is_one_image():
    x, y = random_pair(1, 3, 16, 16)
    for metric in (psnr, ssim):
        out = metric(x[0], y[0])
        assert out.shape == (1,)
        torch.testing.assert_close(out, metric(x, y))


def test_identical_images():
    x, _ = random_pair(3, 3, 32, 32)
    assert torch.equal(ssim(x, x.clone()), torch.ones(3, dtype=torch.float64))
    assert torch.isinf(psnr(x, x.clone())).all() and (psnr(x, x.clone()) > 0).all()


def test_known_psnr_value():
    x = torch.zeros(1, 3, 16, 16)
    y = torch.full((1, 3, 16, 16), 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-5)


def test_worse_images_score_lower():
    x, _ = random_pair(1, 3, 32, 32, seed=5)
    gen = torch.Generator().manual_seed(6)
    noise = torch.randn(x.shape, generator=gen)
    mild, strong = (x + 0.02 * noise).clamp(0, 1), (x + 0.2 * noise).clamp(0, 1)
    assert ssim(x, mild).item() > ssim(x, strong).item()
    assert psnr(x, mild).item() > psnr(x, strong).item()


def test_non_finite_pixels_only_spoil_their_own_image():
    # 32 x 32 planes share a chunk and GEMM blocks on CPU; a bad pixel in the first rows of a plane
    # sits in the same band block as the valid rows of the plane before it, and 0 * NaN = NaN.
    x, y = random_pair(4, 3, 32, 32, seed=7)
    clean_ssim, clean_psnr = ssim(x, y), psnr(x, y)
    x[1, 0, 0, 3] = float("nan")
    y[3, 0, 1, 0] = float("inf")
    got_ssim, got_psnr = ssim(x, y), psnr(x, y)
    assert torch.isnan(got_ssim[1]) and torch.isnan(got_ssim[3])
    assert not torch.isfinite(got_psnr[1]) and not torch.isfinite(got_psnr[3])
    keep = torch.tensor([0, 2])
    torch.testing.assert_close(got_ssim[keep], clean_ssim[keep], rtol=0, atol=1e-12)
    torch.testing.assert_close(got_psnr[keep], clean_psnr[keep], rtol=0, atol=1e-12)


def test_thread_count_does_not_change_results_and_is_restored():
    x, y = random_pair(3, 3, 256, 64, seed=8)
    before = torch.get_num_threads()
    out = ssim(x, y), psnr(x, y)
    assert torch.get_num_threads() == before
    try:
        torch.set_num_threads(1)
        single = ssim(x, y), psnr(x, y)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out[0], single[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1], single[1], rtol=0, atol=1e-12)


def test_map_chunks_keeps_order_reuses_state_and_reraises():
    states = set()

    def square(i: int, state: dict) -> int:
        states.add(id(state))
        return i * i

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert map_chunks(square, 50, torch.device("cpu")) == [i * i for i in range(50)]
        assert 1 <= len(states) <= 2  # one state per worker, reused across its chunks

        def boom(i: int, state: dict) -> int:
            if i == 7:
                raise RuntimeError("chunk 7 failed")
            return i

        with pytest.raises(RuntimeError, match="chunk 7"):
            map_chunks(boom, 40, torch.device("cpu"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "kwargs", "message"),
    [
        ((1, 3, 16, 16), (1, 3, 16, 17), {}, "same shape"),
        ((2, 3, 16, 16), (1, 3, 16, 16), {}, "same shape"),
        ((16, 16), (16, 16), {}, "N x C x H x W"),
        ((1, 1, 3, 16, 16), (1, 1, 3, 16, 16), {}, "N x C x H x W"),
        ((0, 3, 16, 16), (0, 3, 16, 16), {}, "empty"),
        ((1, 3, 16, 16), (1, 3, 16, 16), {"crop_border": 8}, "crop_border=8"),
        ((1, 3, 16, 16), (1, 3, 16, 16), {"crop_border": -1}, "crop_border"),
        ((1, 3, 16, 16), (1, 3, 16, 16), {"crop_border": 1.5}, "crop_border"),
        ((1, 3, 16, 16), (1, 3, 16, 16), {"data_range": 0}, "data_range"),
    ],
)
def test_bad_inputs_raise_value_error(x_shape, y_shape, kwargs, message):
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match=message):
            metric(torch.rand(x_shape), torch.rand(y_shape), **kwargs)


def test_ssim_needs_an_11_pixel_window():
    x, y = random_pair(1, 3, 10, 40)
    with pytest.raises(ValueError, match="11 x 11"):
        ssim(x, y)
    x, y = random_pair(1, 3, 30, 30)
    with pytest.raises(ValueError, match="11 x 11"):
        ssim(x, y, crop_border=10)
    assert math.isfinite(psnr(x, y, crop_border=10).item())  # 10 x 10 is fine for PSNR


def test_non_tensor_input_raises():
    with pytest.raises(ValueError, match="torch.Tensor"):
        psnr(np.zeros((3, 16, 16)), torch.zeros(3, 16, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y = random_pair(3, 3, 64, 48, seed=9)
    for metric in (psnr, ssim):
        out = metric(x.cuda(), y.cuda())
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), metric(x, y), rtol=0, atol=TOL)
