"""Attack methods as surrogate recipes: wavelet loss, SAM, cosine decay, few-shot crops, budgets, steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from imgsteal.attack.methods import build_recipe, build_source
from imgsteal.attack.methods.domain_shift import DomainShiftPix2PixRecipe, DomainShiftPixelRecipe
from imgsteal.attack.methods.few_shot import MultiScaleCropSource, dihedral
from imgsteal.attack.methods.sam import SharpnessAwareMinimization, frozen_norm_statistics
from imgsteal.attack.methods.steps import StepSource, epoch_length
from imgsteal.attack.methods.wavelet import WaveletHighFrequencyLoss
from imgsteal.attack.surrogate import SurrogateConfig, select_budget, train_surrogate
from imgsteal.data.images import encode_png
from imgsteal.data.pairs import PairStore
from imgsteal.errors import ImgstealError
import imgsteal.models.edsr  # noqa: F401  (registers "edsr")
from imgsteal.models import build_model
from imgsteal.train.checkpoint import load_checkpoint
from imgsteal.train.paired import CosineSchedule

CPU = torch.device("cpu")


def make_store(root: Path, count: int, size: int = 24, scale: int = 4, seed: int = 0) -> Path:
    """`count` pairs whose answer is the query upsampled `scale`x (nearest), distinct per pair."""
    gen = torch.Generator().manual_seed(seed)
    with PairStore(root) as store:
        for _ in range(count):
            x = F.interpolate(torch.rand(1, 3, size // 4, size // 4, generator=gen), size=(size, size), mode="bilinear")[0]
            y = F.interpolate(x[None], scale_factor=scale, mode="nearest")[0] if scale > 1 else 1 - x
            store.add(encode_png(x), encode_png(y), source=None, input_size=(size, size),
                      output_size=(size * scale, size * scale), cost_usd=0.0)
    return root


def tiny_sr(tmp_path: Path, **overrides) -> SurrogateConfig:
    settings = dict(store=str(tmp_path / "pairs"), arch="srresnet", n_blocks=1, channels=4, batch_size=2, patch=8,
                    epochs=1, device="cpu", checkpoint_every=0)
    return SurrogateConfig(**{**settings, **overrides})


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# --------------------------------------------------------------------------- wavelet loss


def test_wavelet_loss_sees_high_frequencies_not_offsets():
    loss = WaveletHighFrequencyLoss()  # db3, 2 levels
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    i = torch.arange(40.0)
    checker = 0.1 * ((i % 2) * 2 - 1)[None, None, :, None].expand_as(x)  # highest frequency, amplitude 0.1
    slow = 0.1 * torch.sin(2 * math.pi * i / 80)[None, None, :, None].expand_as(x)  # half a period, same amplitude
    assert loss(x, x).item() == 0.0
    assert loss(x, x + 0.2).item() < 1e-5  # a constant offset has no detail coefficients (symmetric extension)
    high = loss(x, x + checker).item()
    assert high > 0.1
    assert loss(x, x + slow).item() < 0.05 * high  # low frequencies count for little


def test_wavelet_loss_is_differentiable_and_checks_shapes():
    loss = WaveletHighFrequencyLoss()
    out = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(out, torch.rand(1, 3, 16, 16)).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        loss(out, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown discrete wavelet"):
        WaveletHighFrequencyLoss("db99x")


# --------------------------------------------------------------------------- SAM


def test_sam_two_passes_restores_weights_and_moves_them():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    calls = count_calls(net)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sam = SharpnessAwareMinimization(net.parameters(), rho=0.05)
    before = [p.detach().clone() for p in net.parameters()]
    bn_before = net[1].running_mean.clone()

    # The update SAM applies is the gradient at the perturbed point w + rho g/|g|, taken at w.
    loss = F.mse_loss(net(x), y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads):
            p.add_(0.05 * g / norm)
    expected = torch.autograd.grad(F.mse_loss(net(x), y), list(net.parameters()))
    with torch.no_grad():
        for p, b in zip(net.parameters(), before):
            p.copy_(b)
    net[1].running_mean.copy_(bn_before)
    calls[0] = 0

    with torch.no_grad():
        once = 0.9 * bn_before + 0.1 * net[0](x).mean(0)  # one batch-norm update, from the pass at w
    sam.step(opt, lambda: F.mse_loss(net(x), y), module=net)
    assert calls[0] == 2  # two forward (and backward) passes
    for p, b, g in zip(net.parameters(), before, expected):
        torch.testing.assert_close(p.detach(), b - 0.1 * g, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(net[1].running_mean, once)  # the pass at w + e left the statistics alone


def test_frozen_norm_statistics_and_zero_gradient():
    bn = torch.nn.BatchNorm2d(3)
    with frozen_norm_statistics(bn):
        bn(torch.randn(4, 3, 5, 5) + 3)
    assert torch.equal(bn.running_mean, torch.zeros(3)) and bn.momentum == 0.1
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.zeros(3)
    sam = SharpnessAwareMinimization([p], rho=0.05)
    assert sam.ascend() is False and torch.equal(p.detach(), torch.ones(3))
    with pytest.raises(ValueError, match="rho"):
        SharpnessAwareMinimization([p], rho=0)


# --------------------------------------------------------------------------- domain-shift recipes


def test_cosine_schedule_decays_to_zero_and_resumes():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = CosineSchedule({"g": opt}, total_steps=4)
    lrs = []
    for _ in range(4):
        schedule.before_step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-3) and lrs[2] == pytest.approx(0.5e-3) and lrs[3] < lrs[2]
    assert schedule.factor(4) == pytest.approx(0.0)
    resumed = CosineSchedule({"g": torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5.0)}, total_steps=4)
    resumed.load_state(schedule.state())
    assert resumed.step == 4 and resumed.base_lr == {"g": [1e-3]}


def test_domain_shift_sr_step_uses_sam_on_generator():
    torch.manual_seed(0)
    generator = build_model("srresnet", scale=2, n_blocks=1, channels=4)
    calls = count_calls(generator)
    recipe = DomainShiftPixelRecipe(generator, CPU, total_steps=10, lr=1e-3)
    before = [p.detach().clone() for p in generator.parameters()]
    losses = recipe.train_step((torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)))
    assert calls[0] == 2
    assert set(losses) == {"pixel", "wavelet"} and losses["wavelet"] > 0
    assert any(not torch.equal(p, b) for p, b in zip(generator.parameters(), before))
    plain = DomainShiftPixelRecipe(build_model("srresnet", scale=2, n_blocks=1, channels=4), CPU, total_steps=10, sam_rho=0)
    plain_calls = count_calls(plain.generator)
    plain.train_step((torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)))
    assert plain_calls[0] == 1


def test_domain_shift_pix2pix_step_uses_sam_on_discriminator():
    torch.manual_seed(0)
    generator = build_model("unet", ngf=4, image_size=32, norm="batch", use_dropout=True)
    critic = build_model("patchgan", in_channels=6, ndf=4, n_layers=3, norm="batch")
    g_calls, d_calls = count_calls(generator), count_calls(critic)
    recipe = DomainShiftPix2PixRecipe(generator, critic, CPU, total_steps=5, lr=1e-3)
    d_before = [p.detach().clone() for p in critic.parameters()]
    losses = recipe.train_step((torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)))
    assert g_calls[0] == 1
    assert d_calls[0] == 2 * 2 + 1  # (real, fake) at w and at w + e, then once in the generator step
    assert {"g_adv", "l1", "wavelet", "d"} <= set(losses)
    assert any(not torch.equal(p, b) for p, b in zip(critic.parameters(), d_before))
    assert recipe.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(1e-3)  # step 0 of the cosine
    recipe.train_step((torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)))
    assert recipe.optimizers["discriminator"].param_groups[0]["lr"] < 1e-3


# --------------------------------------------------------------------------- few-shot batches


def test_few_shot_crops_come_from_the_pairs_at_several_scales_and_stay_aligned():
    gen = torch.Generator().manual_seed(1)
    inputs = [(torch.rand(3, 40, 40, generator=gen) * 255).to(torch.uint8) for _ in range(2)]
    targets = [x.repeat_interleave(2, -1).repeat_interleave(2, -2) for x in inputs]  # nearest 2x
    source = MultiScaleCropSource(inputs, targets, scale=2, crop=16, batch_size=4, seed=0, zooms=(0.5, 1.0, 2.0))
    sides, pixels = set(), set()
    for index in range(30):
        x, y = source.batch(0, index)
        sides.add(x.shape[-1])
        pixels.add(x.shape[0] * x.shape[-1] ** 2)
        # aligned: the answer crop is still the nearest upsampling of the query crop after flips/rotations
        torch.testing.assert_close(y, x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert sides == {8, 16, 32}
    assert pixels == {4 * 16 * 16}  # the same number of pixels per batch whatever the crop size
    x0, _ = source.batch(3, 7)
    torch.testing.assert_close(x0, source.batch(3, 7)[0])  # deterministic for resume
    # each crop is a window of one of the inputs under one of the 8 symmetries
    x, _ = source.batch(0, 0)
    for crop in x:
        side = crop.shape[-1]
        distances = [(dihedral(image.float() / 255, t).unfold(1, side, 1).unfold(2, side, 1) - crop[:, None, None])
                     .abs().amax(dim=(0, 3, 4)).min() for image in inputs for t in range(8)]
        assert min(distances) < 1e-6


def test_few_shot_style_crops_resize_to_the_training_size():
    inputs = [(torch.rand(3, 64, 64) * 255).to(torch.uint8)]
    source = MultiScaleCropSource(inputs, [x.clone() for x in inputs], scale=1, crop=32, batch_size=3, seed=0,
                                  zooms=(1.0, 2.0), resample=True)
    shapes = {tuple(source.batch(0, i)[0].shape) for i in range(10)}
    assert shapes == {(3, 3, 32, 32)}
    assert {source.crop_plan(z)[0] for z in (1.0, 2.0)} == {32, 64}
    with pytest.raises(ValueError, match="smaller than the crop"):
        MultiScaleCropSource(inputs, inputs, scale=1, crop=128, batch_size=1, seed=0, resample=True)


def test_step_source_recuts_epochs_without_changing_batches():
    class Counting:
        batches_per_epoch = 3

        def batch(self, epoch, index):
            return (torch.tensor([epoch * 10 + index]),)

    wrapped = StepSource(Counting(), steps_per_epoch=5)
    seen = [int(wrapped.batch(e, i)[0]) for e in range(2) for i in range(5)]
    assert seen == [0, 1, 2, 10, 11, 12, 20, 21, 22, 30]
    assert epoch_length(1000, 1) == 100 and epoch_length(7, 1) == 7 and epoch_length(1000, 250) == 250


# --------------------------------------------------------------------------- budgets and configs


def test_budgets_are_nested_and_checked(tmp_path):
    make_store(tmp_path / "pairs", 9)
    with PairStore(tmp_path / "pairs", create=False) as store:
        records = store.select(1.0, seed=3)
        chosen = [{r.input_sha256 for r in select_budget(records, k, seed=3)} for k in range(1, 10)]
        assert [len(c) for c in chosen] == list(range(1, 10))
        assert all(a < b for a, b in zip(chosen, chosen[1:]))
        assert chosen[3] == {r.input_sha256 for r in select_budget(records, 4, seed=3)}  # deterministic
        assert chosen[3] != {r.input_sha256 for r in select_budget(records, 4, seed=4)}
        first = {r.input_sha256 for r in sorted(records, key=lambda r: r.query_id)[:2]}
        assert {r.input_sha256 for r in select_budget(records, 2, seed=0, order="queried")} == first
        with pytest.raises(ImgstealError, match="budget of 10 queries is more than the 9"):
            select_budget(records, 10, seed=0)


def test_config_rejects_bad_attack_budget_and_steps(tmp_path):
    with pytest.raises(ValidationError):
        tiny_sr(tmp_path, attack="magic")
    with pytest.raises(ValidationError):
        tiny_sr(tmp_path, budget=0)
    with pytest.raises(ValidationError):
        tiny_sr(tmp_path, steps=0)
    make_store(tmp_path / "pairs", 3)
    with pytest.raises(ImgstealError, match="budget of 5 queries"):
        train_surrogate(tiny_sr(tmp_path, budget=5), tmp_path / "run", progress=False)


def test_edsr_shapes_and_clamp():
    net = build_model("edsr", scale=4, n_blocks=2, channels=8)
    assert net(torch.rand(1, 3, 6, 5)).shape == (1, 3, 24, 20)
    net.eval()
    out = net(torch.rand(1, 3, 6, 5) * 4 - 2)
    assert out.min() >= 0 and out.max() <= 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    with pytest.raises(ValueError, match="power of two"):
        build_model("edsr", scale=3)


@pytest.mark.parametrize("attack,arch", [("paper", "edsr"), ("domain-shift", "srresnet"), ("few-shot", "edsr"),
                                         ("few-shot", "srresnet")])
def test_train_surrogate_runs_each_attack_for_exact_steps(tmp_path, attack, arch):
    make_store(tmp_path / "pairs", 3)
    cfg = tiny_sr(tmp_path, attack=attack, arch=arch, steps=7, budget=2)
    result = train_surrogate(cfg, tmp_path / "run", progress=False)
    assert result.steps == 7
    ckpt = load_checkpoint(result.model_path)
    assert ckpt.meta["attack"] == attack and ckpt.meta["pairs"] == 2
    assert ckpt.meta["archs"]["generator"]["arch"] == arch


def test_style_surrogates_build_for_each_attack(tmp_path):
    cfg = SurrogateConfig(store="unused", arch="pix2pix_resnet", channels=4, size=32, batch_size=2, device="cpu")
    for attack in ("paper", "domain-shift", "few-shot"):
        recipe, multiple = build_recipe(cfg.model_copy(update={"attack": attack}), 1, CPU, epochs=2, total_steps=4)
        assert multiple == 1 and recipe.modules["generator"].build_spec["arch"] == "resnet_generator"
        assert ("discriminator" in recipe.modules) == (attack != "few-shot")
    x = [(torch.rand(3, 32, 32) * 255).to(torch.uint8)]
    few = build_source(cfg.model_copy(update={"attack": "few-shot"}), x, x, 1, steps_per_epoch=5)
    assert few.batches_per_epoch == 5 and few.batch(0, 0)[0].shape == (2, 3, 32, 32)
    unet, multiple = build_recipe(cfg.model_copy(update={"arch": "pix2pix", "attack": "domain-shift"}), 1, CPU,
                                  epochs=2, total_steps=4)
    assert multiple == 32


def test_steps_are_independent_of_the_number_of_pairs(tmp_path):
    make_store(tmp_path / "pairs", 3)
    for budget in (1, 3):
        cfg = tiny_sr(tmp_path, attack="few-shot", steps=104, budget=budget, batch_size=1, crop_zooms=(1.0,))
        result = train_surrogate(cfg, tmp_path / f"run{budget}", progress=False)
        assert result.steps == 104  # one pair or three: the same number of steps
        meta = load_checkpoint(result.model_path).meta
        assert meta["total_steps"] == 104 and meta["steps_per_epoch"] == 100 and meta["pairs"] == budget


def test_few_shot_without_symmetries_keeps_crops_as_cut():
    image = torch.arange(3 * 20 * 20).reshape(3, 20, 20).to(torch.uint8)
    source = MultiScaleCropSource([image], [image.clone()], scale=1, crop=8, batch_size=6, seed=0, zooms=(1.0,),
                                  symmetries=False)
    x, _ = source.batch(0, 0)
    windows = (image.float() / 255).unfold(1, 8, 1).unfold(2, 8, 1)
    for crop in x:  # every crop is a window of the image itself, not a rotated or mirrored one
        assert (windows - crop[:, None, None]).abs().amax(dim=(0, 3, 4)).min() < 1e-6
