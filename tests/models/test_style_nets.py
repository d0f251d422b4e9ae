"""Style-transfer networks: CycleGAN ResNet generator, pix2pix UNet, PatchGAN, U-GAT-IT.

Small configurations (64 px, 4-16 channels) for behaviour; the default configurations only for
their parameter counts, which must match the reference implementations'.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from imgsteal.models import build_model, registered_models
from imgsteal.models.ugatit import CAMOutput, RhoClipper


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _assert_all_parameters_get_gradients(module: nn.Module, loss: torch.Tensor) -> None:
    loss.backward()
    missing = [name for name, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing[:5]}"
    zero = [name for name, p in module.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"zero gradient for {zero[:5]}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_all_style_networks_are_registered():
    names = set(registered_models())
    assert {"resnet_generator", "unet", "patchgan", "ugatit", "ugatit_discriminator"} <= names
    net = build_model("unet", ngf=4, image_size=32)
    assert net.build_spec == {"arch": "unet", "kwargs": {"ngf": 4, "image_size": 32}}


# ----------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    ("name", "kwargs", "count"),
    [
        ("resnet_generator", {}, 11_378_179),  # CycleGAN resnet_9blocks: "11.378 M"
        ("unet", {}, 54_413_955),  # pix2pix unet_256: "54.414 M"
        # 70x70 basic D with batch norm: 3136 + 131328 + 524800 + 2098176 + 8193 (layer by layer)
        ("patchgan", {}, 2_765_633),
        ("patchgan", {"in_channels": 6}, 2_768_705),  # as pix2pix conditions it: "2.769 M"
    ],
)
def test_default_parameter_counts_match_the_reference(name, kwargs, count):
    assert _n_params(build_model(name, **kwargs)) == count


def test_cyclegan_generator_keeps_the_reference_state_dict_layout():
    state = build_model("resnet_generator").state_dict()
    assert state["model.1.weight"].shape == (64, 3, 7, 7)
    assert state["model.10.conv_block.1.weight"].shape == (256, 256, 3, 3)
    assert state["model.18.conv_block.5.weight"].shape == (256, 256, 3, 3)
    assert state["model.19.weight"].shape == (256, 128, 3, 3)  # first transposed conv
    assert state["model.26.weight"].shape == (3, 64, 7, 7)


# ----------------------------------------------------------------------------- ResNet generator


def test_resnet_generator_shape_range_and_gradients():
    g = build_model("resnet_generator", ngf=8, n_blocks=2)
    x = torch.rand(2, 3, 64, 64)
    y = g(x)
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1
    _assert_all_parameters_get_gradients(g, (y - x).abs().mean())


@pytest.mark.parametrize("size", [(30, 37), (8, 9), (65, 64)])
def test_resnet_generator_takes_any_size(size):
    g = build_model("resnet_generator", ngf=4, n_blocks=1).eval()
    y = g(torch.rand(1, 3, *size))
    assert y.shape == (1, 3, *size)


def test_resnet_generator_rejects_tiny_images_and_bad_options():
    with pytest.raises(ValueError, match="too small"):
        build_model("resnet_generator", ngf=4, n_blocks=1)(torch.rand(1, 3, 6, 32))
    with pytest.raises(ValueError, match="norm"):
        build_model("resnet_generator", norm="group")


def test_resnet_generator_resize_upsampling_has_no_checkerboard():
    """A flat image stays flat through nearest-2x + conv up-sampling; transposed stride-2 convolutions
    stamp a period-2 pattern on it (the checkerboard), which is why the demo victim uses 'resize'."""
    torch.manual_seed(0)
    flat = torch.full((1, 3, 160, 160), 0.4)
    interior = (slice(None), slice(None), slice(64, 96), slice(64, 96))  # away from the zero-padded borders
    with torch.no_grad():
        resize = build_model("resnet_generator", ngf=8, n_blocks=1, norm="batch", init="pytorch",
                             upsample="resize").eval()(flat)
        transpose = build_model("resnet_generator", ngf=8, n_blocks=1, norm="batch", init="pytorch").eval()(flat)
    assert resize.shape == transpose.shape == flat.shape
    def spatial_spread(image: torch.Tensor) -> float:
        return float(image[interior].flatten(2).std(dim=2).max())

    assert spatial_spread(resize) < 1e-7  # exactly flat up to rounding
    assert spatial_spread(transpose) > 1e-4  # the pattern (about 2-4e-4 at this random init)
    assert not any(isinstance(m, nn.ConvTranspose2d)
                   for m in build_model("resnet_generator", ngf=4, n_blocks=1, upsample="resize").modules())
    with pytest.raises(ValueError, match="upsample"):
        build_model("resnet_generator", upsample="bilinear")


def test_resnet_generator_norm_choice():
    instance = build_model("resnet_generator", ngf=4, n_blocks=1)
    batch = build_model("resnet_generator", ngf=4, n_blocks=1, norm="batch")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in instance.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in instance.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in batch.modules())


# ----------------------------------------------------------------------------- UNet


def test_unet_depth_follows_image_size():
    assert build_model("unet", ngf=4).depth == 8
    assert build_model("unet", ngf=4, image_size=64).depth == 6
    assert build_model("unet", ngf=4, image_size=64, depth=4).depth == 4
    with pytest.raises(ValueError, match="power of two"):
        build_model("unet", ngf=4, image_size=100)


def test_unet_shape_range_and_gradients():
    g = build_model("unet", ngf=8, image_size=64)
    x = torch.rand(2, 3, 64, 64)
    y = g(x)
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1
    _assert_all_parameters_get_gradients(g, (y - x).abs().mean())
    # A 64-px-built UNet also runs on any multiple of 64, e.g. 128 x 64.
    assert g.eval()(torch.rand(1, 3, 128, 64)).shape == (1, 3, 128, 64)


@pytest.mark.parametrize(("side", "depth"), [(100, 8), (64, 7), (96, 6)])
def test_unet_reports_sizes_it_cannot_take(side, depth):
    g = build_model("unet", ngf=2, depth=depth)
    unit = 2**depth
    expected = f"image size {side} does not fit a UNet of depth {depth}: use a multiple of {unit}"
    with pytest.raises(ValueError, match=expected):
        g(torch.rand(1, 3, side, side))


def test_unet_dropout_as_pix2pix():
    g = build_model("unet", ngf=4)  # depth 8: dropout in the three 8*ngf stages above the bottom
    dropouts = [i for i, up in enumerate(g.ups) if any(isinstance(m, nn.Dropout) for m in up.modules())]
    assert dropouts == [4, 5, 6]
    small = build_model("unet", ngf=4, image_size=64)
    x = torch.rand(2, 3, 64, 64)
    small.train()
    assert not torch.equal(small(x), small(x)), "dropout makes training passes differ"
    small.eval()
    torch.testing.assert_close(small(x), small(x))
    assert not any(isinstance(m, nn.Dropout) for m in build_model("unet", ngf=4, use_dropout=False).modules())


# ----------------------------------------------------------------------------- PatchGAN


def test_patchgan_logit_map_and_gradients():
    d = build_model("patchgan", ndf=8, in_channels=6)
    pair = torch.rand(2, 6, 64, 64)
    logits = d(pair)
    assert logits.shape == (2, 1, 6, 6)  # 64 / 8 - 2
    _assert_all_parameters_get_gradients(d, logits.mean())
    assert d.output_size(256) == 30 and d.min_input_size() == 24


def test_patchgan_receptive_field_is_70px():
    # Each logit depends on exactly a 70 x 70 input window (the "70x70 PatchGAN").
    d = build_model("patchgan", ndf=4, norm="none").eval()
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    d(x)[0, 0, 5, 5].backward()
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero()
    assert rows.max() - rows.min() + 1 == 70


def test_patchgan_norm_and_input_checks():
    assert any(isinstance(m, nn.InstanceNorm2d) for m in build_model("patchgan", ndf=4, norm="instance").modules())
    d = build_model("patchgan", ndf=4)
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        d(torch.rand(1, 6, 64, 64))
    with pytest.raises(ValueError, match="at least 24 px"):
        d(torch.rand(1, 3, 16, 64))


# ----------------------------------------------------------------------------- U-GAT-IT


@pytest.mark.parametrize("light", [False, True])
def test_ugatit_generator_outputs_and_gradients(light):
    g = build_model("ugatit", ngf=8, n_blocks=2, image_size=64, light=light)
    x = torch.rand(2, 3, 64, 64)
    out = g.forward_with_cam(x)
    assert isinstance(out, CAMOutput)
    assert out.output.shape == x.shape and 0 <= out.output.min() and out.output.max() <= 1
    assert out.cam_logit.shape == (2, 2)
    assert out.heatmap.shape == (2, 1, 16, 16)
    torch.testing.assert_close(g(x), out.output)
    _assert_all_parameters_get_gradients(g, (out.output - x).abs().mean() + out.cam_logit.mean())


def test_ugatit_light_is_smaller_and_takes_any_size_full_does_not():
    full = build_model("ugatit", ngf=8, n_blocks=2, image_size=64)
    light = build_model("ugatit", ngf=8, n_blocks=2, image_size=64, light=True)
    assert _n_params(full) - _n_params(light) == (16 * 16 - 1) * 32 * 32  # only the MLP's first layer differs
    assert light(torch.rand(1, 3, 50, 62)).shape == (1, 3, 50, 62)
    with pytest.raises(ValueError, match="built for 64x64"):
        full(torch.rand(1, 3, 32, 32))


def test_ugatit_rho_is_clipped_to_unit_interval():
    g = build_model("ugatit", ngf=4, n_blocks=1, light=True)
    rhos = [m.rho for m in g.modules() if hasattr(m, "rho")]
    assert len(rhos) == 2 + 2  # two AdaLIN in the block, two LIN in the up-sampling path
    assert all(0 <= r.min() and r.max() <= 1 for r in rhos)
    # An optimiser step that pushes rho far outside [0, 1]; clipping brings it back.
    optimiser = torch.optim.SGD(g.parameters(), lr=100.0)
    out = g.forward_with_cam(torch.rand(2, 3, 32, 32))
    (out.output.mean() + sum(r.sum() for r in rhos) * 10).backward()
    optimiser.step()
    assert any(r.min() < 0 or r.max() > 1 for r in rhos)
    g.clip_rho()
    assert all(0 <= r.min() and r.max() <= 1 for r in rhos)
    # The standalone clipper does the same for any module tree.
    with torch.no_grad():
        rhos[0].fill_(1.7)
    g.apply(RhoClipper(0, 1))
    assert rhos[0].max() == 1


@pytest.mark.parametrize(("n_layers", "size", "logit_side"), [(5, 64, 6), (7, 96, 1)])
def test_ugatit_discriminators(n_layers, size, logit_side):
    d = build_model("ugatit_discriminator", ndf=4, n_layers=n_layers)
    out = d(torch.rand(2, 3, size, size))
    assert out.output.shape == (2, 1, logit_side, logit_side)
    assert out.cam_logit.shape == (2, 2)
    assert out.heatmap.shape[:2] == (2, 1)
    convs = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not d.conv1x1]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs), "spectral norm everywhere"
    _assert_all_parameters_get_gradients(d, out.output.mean() + out.cam_logit.mean())
    with pytest.raises(ValueError, match=f"at least {d.min_input_size()} px"):
        d(torch.rand(1, 3, d.min_input_size() - 1, size))


def test_ugatit_generator_feeds_its_discriminator():
    g = build_model("ugatit", ngf=4, n_blocks=1, light=True)
    d_local = build_model("ugatit_discriminator", ndf=4, n_layers=5)
    fake = g(torch.rand(1, 3, 32, 32))
    logits, cam_logit, _ = d_local(fake)
    loss = nn.functional.mse_loss(logits, torch.ones_like(logits)) + cam_logit.pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in g.parameters())
