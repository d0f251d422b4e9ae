"""Style-transfer training recipes on tiny networks: CycleGAN, U-GAT-IT, pix2pix; image pool; lr policy."""

from __future__ import annotations

import math

import pytest
import torch

from imgsteal.errors import ImgstealError
from imgsteal.models import build_model
from imgsteal.train.cyclegan import CycleGANRecipe
from imgsteal.train.gan import LinearDecaySchedule, linear_decay_factor
from imgsteal.train.image_pool import ImagePool
from imgsteal.train.pix2pix import Pix2PixRecipe, unet_depth_for
from imgsteal.victim.style import StyleVictimConfig, UnpairedCropSource, build_style_recipe

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _batch(n=2, size=32):
    return torch.rand(n, 3, size, size), torch.rand(n, 3, size, size)


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_linear_decay_factor_is_constant_then_linear_towards_zero():
    factors = [linear_decay_factor(e, 10) for e in range(10)]
    assert factors[:5] == [1.0] * 5
    assert factors[5:] == pytest.approx([1 - k / 6 for k in range(1, 6)])
    assert factors[-1] == pytest.approx(1 / 6)  # the reference ends just above 0
    assert [linear_decay_factor(e, 4, decay_epochs=0) for e in range(4)] == [1.0] * 4
    with pytest.raises(ValueError, match="decay_epochs"):
        linear_decay_factor(0, 4, decay_epochs=5)


def test_schedule_sets_learning_rates_and_round_trips_its_state():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    schedule = LinearDecaySchedule({"g": opt}, epochs=4, decay_epochs=2)
    schedule.begin_epoch(3)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4 / 3)
    other_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)  # resumed with another --lr
    restored = LinearDecaySchedule({"g": other_opt}, epochs=4, decay_epochs=2)
    restored.load_state(schedule.state())
    restored.begin_epoch(3)
    assert other_opt.param_groups[0]["lr"] == pytest.approx(2e-4 / 3)


def test_image_pool_fills_then_swaps_and_restores_from_its_state():
    pool = ImagePool(3)
    first = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert torch.equal(pool.query(first), first) and len(pool) == 2
    pool.query(first + 100)
    assert len(pool) == 3  # capped at its size
    torch.manual_seed(3)
    outs = [pool.query(torch.full((1, 3, 2, 2), 1000.0 + i)) for i in range(20)]
    from_history = [o for i, o in enumerate(outs) if o[0, 0, 0, 0].item() != 1000.0 + i]
    assert 0 < len(from_history) < 20  # about half the queries get an older image back
    clone = ImagePool(3)
    clone.load_state_dict(pool.state_dict())
    torch.manual_seed(7)
    a = pool.query(torch.ones(4, 3, 2, 2))
    torch.manual_seed(7)
    b = clone.query(torch.ones(4, 3, 2, 2))
    assert torch.equal(a, b) and torch.equal(pool.images, clone.images)
    assert torch.equal(ImagePool(0).query(first), first)


def _cyclegan(pool_size=2):
    gens = [build_model("resnet_generator", ngf=4, n_blocks=1) for _ in range(2)]
    discs = [build_model("patchgan", in_channels=3, ndf=4, norm="instance") for _ in range(2)]
    return CycleGANRecipe(*gens, *discs, CPU, epochs=2, pool_size=pool_size)


def test_cyclegan_steps_update_every_network_with_finite_losses():
    recipe = _cyclegan()
    assert set(recipe.modules) >= {"generator", "generator_ba", "discriminator_a", "discriminator_b", "pool_a", "pool_b"}
    nets = [recipe.modules[k] for k in ("generator", "generator_ba", "discriminator_a", "discriminator_b")]
    before = [_params(m) for m in nets]
    recipe.begin_epoch(0)
    for _ in range(2):
        losses = recipe.train_step(_batch())
    assert set(losses) == {"g_adv", "cycle", "identity", "d"}
    assert all(math.isfinite(float(v)) for v in losses.values())
    assert float(losses["cycle"]) > 0 and float(losses["identity"]) > 0
    assert all(_changed(b, m) for b, m in zip(before, nets))
    assert len(recipe.pool_a) == 2 and all(p.requires_grad for m in nets for p in m.parameters())


def test_ugatit_steps_with_cam_loss_and_rho_clipping():
    cfg = StyleVictimConfig(arch="ugatit", domain_a="a", domain_b="b", size=32, epochs=2, ngf=4, ndf=4, n_blocks=1,
                            light=True)
    recipe = build_style_recipe(cfg, CPU)
    assert recipe.g_ab.light and set(recipe.optimizers) == {"generators", "discriminators"}
    assert recipe.optimizers["generators"].param_groups[0]["lr"] == 1e-4  # the U-GAT-IT default
    with torch.no_grad():  # push rho out of range: the step must clip it back
        recipe.g_ab.UpBlock1[0].norm1.rho.fill_(1.7)
    recipe.begin_epoch(0)
    for _ in range(2):
        losses = recipe.train_step(_batch())
    assert set(losses) == {"g_adv", "cycle", "identity", "cam", "d"}
    assert all(math.isfinite(float(v)) for v in losses.values())
    for g in (recipe.g_ab, recipe.g_ba):
        rhos = [p for n, p in g.named_parameters() if n.endswith("rho")]
        assert rhos and all(((r >= 0) & (r <= 1)).all() for r in rhos)


def test_pix2pix_step_and_clear_size_errors():
    generator = build_model("unet", ngf=4, image_size=32)
    discriminator = build_model("patchgan", in_channels=6, ndf=4)
    recipe = Pix2PixRecipe(generator, discriminator, CPU, epochs=2)
    g_before, d_before = _params(generator), _params(discriminator)
    recipe.begin_epoch(0)
    losses = recipe.train_step(_batch())
    assert set(losses) == {"g_adv", "l1", "d"} and all(math.isfinite(float(v)) for v in losses.values())
    assert _changed(g_before, generator) and _changed(d_before, discriminator)
    assert unet_depth_for(256) == 8 and unet_depth_for(64) == 6
    with pytest.raises(ImgstealError, match="power of two"):
        unet_depth_for(96)


def test_unpaired_crops_are_deterministic_sized_and_cover_the_larger_domain():
    a = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    b = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    src = UnpairedCropSource(a, b, size=32, batch_size=2, seed=1)
    assert src.batches_per_epoch == 3
    x1, y1 = src.batch(1, 2)
    x2, y2 = src.batch(1, 2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == y1.shape == (2, 3, 32, 32) and 0 <= x1.min() and x1.max() <= 1
    assert not torch.equal(src.batch(2, 2)[0], x1)
    with pytest.raises(ValueError, match="smaller than the crop size"):
        UnpairedCropSource(a, b, size=48, batch_size=2, seed=1)
