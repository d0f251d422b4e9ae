"""`imgsteal victim import`: files in each public format, built with the reference key names and
shapes, import into run folders whose answers match an independent functional forward pass."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from imgsteal.errors import CheckpointError
from imgsteal.victim.formats import DiscriminatorFileError, ImportOptions, import_model
from imgsteal.victim.inference import load_translator
from victim_import import reference_nets as ref

TOL = 1e-5


def _image(h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _imported(tmp_path: Path, obj, name: str = "model.pth", legacy: bool = False, **options):
    path = tmp_path / name
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    result = import_model(path, tmp_path / "run", ImportOptions(**options))
    return result, load_translator(tmp_path / "run", "cpu")


def _styled(reference_out: torch.Tensor) -> torch.Tensor:
    return ((reference_out + 1) / 2).clamp(0, 1)


@pytest.mark.parametrize("norm,old,legacy", [("instance", True, True), ("instance", False, False), ("batch", False, False)])
def test_cyclegan_resnet_generator(tmp_path, norm, old, legacy):
    state = ref.cyclegan_resnet_state(ngf=8, n_blocks=3, norm=norm, old=old)
    result, translator = _imported(tmp_path, state, "latest_net_G.pth", legacy=legacy)
    assert result.info["detected"]["format"] == "cyclegan"
    assert result.info["detected"]["variant"] == "resnet_3blocks"
    assert bool(result.info["detected"]["dropped_keys"]) == old  # stale InstanceNorm statistics dropped
    x = _image()
    expected = _styled(ref.cyclegan_resnet_forward(state, x * 2 - 1, 3, norm))
    assert (translator(x) - expected).abs().max() < TOL


@pytest.mark.parametrize("norm,old", [("batch", False), ("instance", True)])
def test_pix2pix_unet_generator(tmp_path, norm, old):
    state = ref.unet_state(ngf=4, depth=5, norm=norm, old=old)
    result, translator = _imported(tmp_path, state, "latest_net_G.pth")
    assert result.info["detected"]["variant"] == "unet_32" and result.info["size_multiple"] == 32
    x = _image()
    expected = _styled(ref.unet_forward(state, x * 2 - 1, 5, norm))
    assert (translator(x) - expected).abs().max() < TOL


def test_pix2pix_unet_train_mode_uses_batch_statistics(tmp_path):
    state = ref.unet_state(ngf=4, depth=5, norm="batch")
    _, evaluated = _imported(tmp_path, state)
    result = import_model(tmp_path / "model.pth", tmp_path / "run_train", ImportOptions(train_mode=True))
    trained = load_translator(tmp_path / "run_train", "cpu")
    assert result.info["mode"] == "train" and trained.generator.training
    x = torch.cat([_image(seed=1), _image(seed=2)])
    before = {k: v.clone() for k, v in trained.generator.state_dict().items()}
    assert (trained(x) - evaluated(x)).abs().max() > 1e-3
    assert all(torch.equal(before[k], v) for k, v in trained.generator.state_dict().items())


@pytest.mark.parametrize("light,direction", [(True, "a2b"), (True, "b2a"), (False, "a2b")])
def test_ugatit_generator(tmp_path, light, direction):
    ckpt = ref.ugatit_checkpoint(ngf=4, n_blocks=2, light=light, size=32)
    result, translator = _imported(tmp_path, ckpt, "selfie2anime_params_latest.pt", direction=direction)
    assert result.info["detected"]["variant"] == ("light" if light else "full (32 px)")
    state = ckpt["genA2B" if direction == "a2b" else "genB2A"]
    x = _image()
    expected = _styled(ref.ugatit_generator_forward(state, x * 2 - 1, 2, light))
    assert (translator(x) - expected).abs().max() < TOL
    if not light:  # the full model takes only its own size: other sizes are resized to it and back
        assert translator(_image(40, 24)).shape == (1, 3, 40, 24)


@pytest.mark.parametrize("scale", [4, 2])
def test_basicsr_rrdbnet_prefers_params_ema(tmp_path, scale):
    ema = ref.rrdbnet_state(nf=8, nb=2, gc=4, scale=scale, seed=1)
    plain = ref.rrdbnet_state(nf=8, nb=2, gc=4, scale=scale, seed=2)
    result, translator = _imported(tmp_path, {"params": plain, "params_ema": ema}, "net_g_latest.pth")
    assert result.info["scale"] == scale and result.info["detected"]["weights"] == "params_ema"
    x = _image(12, 16)
    expected = ref.rrdbnet_forward(ema, x, 2, scale).clamp(0, 1)
    assert (translator(x) - expected).abs().max() < TOL


@pytest.mark.parametrize("scheme", ["RRDB_trunk", "model.1.sub"])
def test_esrgan_old_key_schemes(tmp_path, scheme):
    state = ref.rrdbnet_state(nf=8, nb=2, gc=4)
    old = ref.to_esrgan_old_keys(state) if scheme == "RRDB_trunk" else ref.to_esrgan_first_release_keys(state, 2)
    result, translator = _imported(tmp_path, old, "RRDB_ESRGAN_x4.pth", legacy=True)
    assert result.info["detected"]["format"] == "esrgan-old" and result.info["detected"]["scheme"].startswith(scheme)
    x = _image(12, 12)
    assert (translator(x) - ref.rrdbnet_forward(state, x, 2).clamp(0, 1)).abs().max() < TOL


@pytest.mark.parametrize("scale", [4, 3])
def test_basicsr_msrresnet(tmp_path, scale):
    state = ref.msrresnet_state(nf=8, nb=3, scale=scale)
    result, translator = _imported(tmp_path, {"params": state}, "SRGAN_x4.pth")
    assert result.info["detected"]["arch"] == "MSRResNet" and result.info["scale"] == scale
    x = _image(10, 14)
    assert (translator(x) - ref.msrresnet_forward(state, x, 3, scale).clamp(0, 1)).abs().max() < TOL


def test_basicsr_safetensors_file(tmp_path):
    state = ref.msrresnet_state(nf=8, nb=2)
    save_file(state, str(tmp_path / "weights.safetensors"))
    import_model(tmp_path / "weights.safetensors", tmp_path / "run")
    x = _image(8, 8)
    expected = ref.msrresnet_forward(state, x, 2).clamp(0, 1)
    assert (load_translator(tmp_path / "run", "cpu")(x) - expected).abs().max() < TOL
    # a public file also works directly as --model, imported in memory
    assert (load_translator(tmp_path / "weights.safetensors", "cpu")(x) - expected).abs().max() < TOL


@pytest.mark.parametrize("names", [("conv_block1", "conv_block2", "conv_block3"), ("conv1", "conv2", "conv3")])
def test_srgan_pytorch_pth_tar(tmp_path, names):
    state = ref.srgan_pytorch_state(nf=8, nb=2, n_up=2, names=names)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [10, 20])
    ckpt = {"epoch": 40, "best_psnr": np.float64(27.5), "state_dict": state, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict()}
    result, translator = _imported(tmp_path, ckpt, "g_best.pth.tar")
    assert result.info["detected"]["format"] == "srgan-pytorch" and result.info["scale"] == 4
    x = _image(10, 12)
    assert (translator(x) - ref.srgan_pytorch_forward(state, x, 2, 2, names)).abs().max() < TOL


def test_full_size_architectures_match_reference_parameter_counts(tmp_path):
    from imgsteal.models import build_model

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model("rrdbnet")) == 16_697_987
    assert count(build_model("msrresnet")) == 1_517_571
    state = ref.rrdbnet_state(nf=64, nb=23, gc=32)
    assert sum(v.numel() for v in state.values()) == 16_697_987
    result, translator = _imported(tmp_path, {"params_ema": state}, "RealESRGAN_x4plus.pth")
    assert count(translator.generator) == 16_697_987 and result.info["detected"]["n_blocks"] == 23
    x = _image(6, 6)
    assert (translator(x) - ref.rrdbnet_forward(state, x, 23).clamp(0, 1)).abs().max() < TOL


@pytest.mark.parametrize("obj,words", [
    (ref.patchgan_state(), "PatchGAN"),
    ({"params": ref.vgg_discriminator_state()}, "VGG-style discriminator"),
    ({"params": {"conv0.weight": torch.zeros(4, 3, 3, 3), "conv1.weight_orig": torch.zeros(4, 4, 4, 4)}}, "spectral-norm"),
    ({"state_dict": ref.srgan_pytorch_discriminator_state()}, "SRGAN-PyTorch discriminator"),
    ({"disGA": {"a": torch.zeros(1)}, "disLA": {"a": torch.zeros(1)}}, "only discriminators"),
])
def test_discriminator_files_are_refused(tmp_path, obj, words):
    torch.save(obj, tmp_path / "d.pth")
    with pytest.raises(DiscriminatorFileError, match=words):
        import_model(tmp_path / "d.pth", tmp_path / "run")
    assert not (tmp_path / "run" / "import.json").exists()


def test_files_needing_arbitrary_unpickling_are_refused(tmp_path):
    torch.save({"state_dict": ref.msrresnet_state(), "args": argparse.Namespace(lr=1)}, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError, match="arbitrary unpickling.*argparse.Namespace"):
        import_model(tmp_path / "ckpt.pth", tmp_path / "run")


def test_unknown_weights_name_what_each_format_missed(tmp_path):
    torch.save({"encoder.0.weight": torch.zeros(2, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError) as info:
        import_model(tmp_path / "other.pth", tmp_path / "run")
    message = str(info.value)
    for needle in ("no known format matched", "cyclegan:", "ugatit:", "basicsr:", "esrgan-old:", "srgan-pytorch:"):
        assert needle in message


def test_explicit_format_that_does_not_fit_says_why(tmp_path):
    torch.save(ref.cyclegan_resnet_state(), tmp_path / "latest_net_G.pth")
    with pytest.raises(CheckpointError, match="not a basicsr file"):
        import_model(tmp_path / "latest_net_G.pth", tmp_path / "run", ImportOptions(format="basicsr"))
    with pytest.raises(CheckpointError, match="value range is fixed"):
        import_model(tmp_path / "latest_net_G.pth", tmp_path / "run", ImportOptions(input_range=(-1, 1)))
    with pytest.raises(CheckpointError, match="--scale 4"):
        import_model(tmp_path / "latest_net_G.pth", tmp_path / "run", ImportOptions(scale=4))


def test_file_names_do_not_decide_the_format(tmp_path):
    """Two formats both publish `latest_net_G.pth`; and a BasicSR file named like a CycleGAN one still imports."""
    torch.save({"params": ref.msrresnet_state()}, tmp_path / "latest_net_G.pth")
    result = import_model(tmp_path / "latest_net_G.pth", tmp_path / "run")
    assert result.info["detected"]["format"] == "basicsr"


def test_declared_range_and_channel_order_apply_to_sr_weights(tmp_path):
    """An SR network trained on [-1, 1] BGR images: the declared contract is applied around it."""
    state = ref.msrresnet_state(nf=8, nb=1)
    result, translator = _imported(tmp_path, {"params": state}, input_range=(-1, 1), channel_order="bgr")
    assert result.info["contract"] == {"input_range": [-1.0, 1.0], "output_range": [-1.0, 1.0], "channel_order": "bgr"}
    x = _image(8, 10)
    raw = ref.msrresnet_forward(state, x[:, [2, 1, 0]] * 2 - 1, 1)
    expected = ((raw[:, [2, 1, 0]] + 1) / 2).clamp(0, 1)
    assert (translator(x) - expected).abs().max() < TOL
