"""The CycleGAN / pix2pix networks start from the reference initialisation (checked statistically)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgsteal.models import build_model
from imgsteal.models.init import apply_init

NETWORKS = {
    "unet": dict(ngf=16, image_size=64, norm="batch"),
    "patchgan": dict(in_channels=6, ndf=32, n_layers=3, norm="batch"),
    "resnet_generator": dict(ngf=16, n_blocks=2, norm="instance"),
    "pix2pix_resnet": dict(ngf=16, n_blocks=2, norm="batch", use_dropout=True),
}


def _build(name, **extra):
    arch = "resnet_generator" if name == "pix2pix_resnet" else name
    return build_model(arch, **NETWORKS[name], **extra)


def _layers(net, kinds):
    return [m for m in net.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("name", list(NETWORKS))
def test_reference_init_is_the_default_normal_0_02(name):
    torch.manual_seed(0)
    net = _build(name)
    convs = _layers(net, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    for conv in convs:
        if conv.bias is not None:
            assert torch.count_nonzero(conv.bias) == 0
        w = conv.weight.detach().flatten()
        if w.numel() >= 2000:  # per layer: N(0, 0.02) within sampling error
            assert w.std().item() == pytest.approx(0.02, rel=0.1)
            assert abs(w.mean().item()) < 0.003
    z = torch.cat([c.weight.detach().flatten() for c in convs]) / 0.02
    assert z.numel() > 50_000
    # Normal, not PyTorch's Kaiming-uniform: the 2-sigma tail holds ~4.55% (a uniform has none) and
    # the kurtosis is 3 (a uniform's is 1.8).
    assert (z.abs() > 2).float().mean().item() == pytest.approx(0.0455, abs=0.004)
    assert ((z - z.mean()) ** 4).mean().item() / z.var().item() ** 2 == pytest.approx(3.0, abs=0.15)
    norms = _layers(net, nn.BatchNorm2d)
    if NETWORKS[name]["norm"] == "batch":
        gamma = torch.cat([n.weight.detach() for n in norms])
        assert gamma.numel() >= 400
        assert gamma.mean().item() == pytest.approx(1.0, abs=0.005)
        assert gamma.std().item() == pytest.approx(0.02, rel=0.15)
        assert all(torch.count_nonzero(n.bias) == 0 for n in norms)
    else:
        assert not norms


def test_pytorch_init_turns_it_off():
    torch.manual_seed(0)
    net = _build("unet", init="pytorch")
    assert all(torch.all(n.weight == 1) for n in _layers(net, nn.BatchNorm2d))  # PyTorch's BN default
    first = net.downs[0].block[0].weight.detach()  # Kaiming-uniform: bounded by 1/sqrt(fan_in)
    bound = 1 / (3 * 4 * 4) ** 0.5
    assert first.abs().max().item() <= bound and first.std().item() > 0.05
    assert net.build_spec["kwargs"]["init"] == "pytorch"  # a checkpoint rebuilds it the same way
    with pytest.raises(ValueError, match="init must be one of reference, pytorch"):
        apply_init(net, "xavier")


def test_style_victim_config_chooses_the_init():
    from imgsteal.victim.style import StyleVictimConfig, build_style_recipe

    def recipe(**kw):
        torch.manual_seed(0)
        cfg = StyleVictimConfig(arch="cyclegan", domain_a="a", domain_b="b", size=32, ngf=8, ndf=8, n_blocks=1, **kw)
        return build_style_recipe(cfg, torch.device("cpu"))

    default, off = recipe(), recipe(init="pytorch")
    for net in (default.g_ab, default.d_b):
        w = torch.cat([m.weight.detach().flatten() for m in _layers(net, (nn.Conv2d, nn.ConvTranspose2d))])
        assert w.std().item() == pytest.approx(0.02, rel=0.1)
    first_off = off.g_ab.model[1].weight.detach()  # 7x7 conv on 3 channels: Kaiming-uniform bound 1/sqrt(147)
    assert first_off.abs().max().item() <= 147 ** -0.5 and first_off.std().item() > 0.04
