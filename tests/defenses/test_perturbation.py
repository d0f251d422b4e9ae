"""PGD output perturbation: the epsilon bound, the discriminator's loss, loading, and the transfer experiment."""

from __future__ import annotations

import pytest
import torch

from imgsteal.defenses.perturbation import (
    PGDDefense, PGDOptions, discriminator_loss, find_discriminator_name, load_discriminator, pgd_linf,
    transfer_experiment,
)
from imgsteal.errors import CheckpointError
from imgsteal.models import build_model


@pytest.fixture(scope="module")
def disc():
    torch.manual_seed(0)
    return build_model("vgg_discriminator", base_channels=4, dense=16).eval()


@pytest.mark.parametrize("epsilon", [0.25, 0.03])
def test_pgd_respects_epsilon_and_raises_the_discriminator_loss(disc, epsilon):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    objective = lambda batch: discriminator_loss(disc, batch, "fake")  # noqa: E731
    adv = pgd_linf(objective, x, epsilon, steps=5, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= epsilon + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert objective(adv) > objective(x)
    assert torch.equal(pgd_linf(objective, x, 0.0, 5), x)


def test_pgd_without_random_start_is_plain_signed_ascent(disc):
    x = torch.full((1, 3, 16, 16), 0.5)
    adv = pgd_linf(lambda b: b.sum(), x, 0.1, steps=4, step_size=0.05, random_start=False)
    assert torch.allclose(adv, torch.full_like(x, 0.6))  # pushed up to the bound, then projected


def test_defence_loads_the_discriminator_and_is_deterministic_per_query(victim_run):
    defense = PGDDefense(PGDOptions(discriminator=victim_run, epsilon=0.05, steps=2))
    assert defense.loss == "bce"
    answer = torch.rand(3, 32, 32)
    out1, label = defense.apply("mallory", torch.rand(3, 8, 8), answer, "ab" * 32)
    out2, _ = defense.apply("mallory", torch.rand(3, 8, 8), answer, "ab" * 32)
    out3, _ = defense.apply("mallory", torch.rand(3, 8, 8), answer, "cd" * 32)
    assert label == "pgd" and torch.equal(out1, out2) and not torch.equal(out1, out3)
    assert (out1 - answer).abs().max() <= 0.05 + 1e-6


def test_inference_mode_answers_can_be_perturbed(victim, victim_run):
    defense = PGDDefense(PGDOptions(discriminator=victim_run, epsilon=0.05, steps=1))
    answer = victim(torch.rand(1, 3, 8, 8))[0]  # made under torch.inference_mode, as the server does
    out, _ = defense.apply("k", torch.rand(3, 8, 8), answer, "ef" * 32)
    assert out.shape == answer.shape


def test_discriminator_lookup(victim_run):
    assert find_discriminator_name(["generator", "discriminator"]) == "discriminator"
    assert find_discriminator_name(["generator", "generator_ba", "discriminator_a", "discriminator_b"]) == "discriminator_b"
    assert find_discriminator_name(["generator", "disc_global_a", "disc_global_b", "disc_local_b"]) == "disc_global_b"
    with pytest.raises(CheckpointError, match="training checkpoint"):
        find_discriminator_name(["generator"])
    with pytest.raises(CheckpointError, match="no module 'x'"):
        find_discriminator_name(["generator"], "x")
    assert isinstance(load_discriminator(victim_run), torch.nn.Module)
    with pytest.raises(CheckpointError):
        load_discriminator(victim_run / "model.safetensors")  # the exported model holds the generator only


def test_patchgan_and_lsgan_losses():
    torch.manual_seed(0)
    patch = build_model("patchgan", in_channels=3, ndf=4, n_layers=3, norm="instance").eval()
    x = torch.rand(1, 3, 70, 70)
    adv = pgd_linf(lambda b: discriminator_loss(patch, b, "fake", "mse"), x, 0.1, steps=3)
    with torch.no_grad():
        assert discriminator_loss(patch, adv, "fake", "mse") > discriminator_loss(patch, x, "fake", "mse")


def test_transfer_experiment_measures_both_models(victim, kit, tmp_path):
    other = kit.make_victim_run(tmp_path / "other", seed=3)
    from imgsteal.victim.inference import load_translator

    surrogate = load_translator(other, "cpu")
    torch.manual_seed(0)
    inputs = [torch.rand(3, 8, 10), torch.rand(3, 6, 6), torch.rand(3, 8, 8)]
    result = transfer_experiment(victim, surrogate, inputs, epsilon=0.1, steps=3, keep_examples=2)
    assert len(result.victim_psnr) == 3 and len(result.examples) == 2
    ex = result.examples[0]
    assert (ex.adv_input - ex.clean_input).abs().max() <= 0.1 + 1e-6
    assert ex.victim_adv.shape == (3, 32, 40)
    # Crafted against the victim: its answer moves more than under random noise of the same size.
    noisy = (inputs[0] + 0.1 * (torch.rand(inputs[0].shape) * 2 - 1)).clamp(0, 1)
    random_mse = float(torch.nn.functional.mse_loss(victim(noisy[None]), victim(inputs[0][None])))
    assert result.victim_mse[0] > random_mse
    assert result.as_dict()["images"] == 3 and result.transfer_ratio >= 0
