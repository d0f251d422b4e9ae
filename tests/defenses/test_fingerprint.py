"""Fingerprinting: networks, a tiny training run, stamping, detection, secrets, the CLI and the oracle hook."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.data.images import decode_image, encode_png, list_images, load_image, save_image
from imgsteal.defenses.fingerprint import (
    SECRET_FILE, FingerprintDefense, FingerprintModel, FingerprintTrainConfig, bits_to_text, detect_fingerprint,
    new_fingerprint, text_to_bits, train_fingerprint,
)
from imgsteal.errors import ImgstealError
from imgsteal.models import build_model

BITS = 16


def test_networks_take_any_image_size():
    enc = build_model("fingerprint_encoder", bits=BITS, size=32, channels=4)
    dec = build_model("fingerprint_decoder", bits=BITS, size=32, channels=4)
    x, bits = torch.rand(2, 3, 32, 32), torch.randint(0, 2, (2, BITS)).float()
    stamped = enc(x, bits)
    assert stamped.shape == x.shape and 0 <= stamped.min() and stamped.max() <= 1
    assert dec(stamped).shape == (2, BITS) and dec(torch.rand(1, 3, 45, 70)).shape == (1, BITS)
    with pytest.raises(ValueError, match="32 x 32"):
        enc(torch.rand(1, 3, 40, 40), bits[:1])


def test_bits_text_round_trip():
    bits = torch.tensor([1.0, 0, 0, 1, 1])
    assert bits_to_text(bits) == "10011" and torch.equal(text_to_bits("10011\n"), bits)
    with pytest.raises(ImgstealError):
        text_to_bits("10a1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny encoder/decoder trained for a few hundred steps on 8 synthetic images (a few seconds)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("fp")
    rng = np.random.default_rng(0)
    for i in range(8):
        coarse = rng.integers(0, 256, size=(9, 9, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((64, 48), Image.BICUBIC).save(root / f"img_{i}.png")
    torch.set_num_threads(1)
    cfg = FingerprintTrainConfig(images=[str(root)], bits=BITS, size=32, channels=8, steps=200, batch_size=8,
                                 lr=3e-3, image_weight=10.0, device="cpu")
    result = train_fingerprint(cfg, root / "run", progress=False)
    return root, root / "run", result


def test_training_reports_bit_accuracy_on_stamped_and_clean_images(trained):
    _, run, result = trained
    assert result.images == 8 and result.bits == BITS
    # Honest numbers of a tiny run: the decoder reads the fingerprint far above chance from stamped
    # images, and at about chance from clean ones.
    assert result.fingerprinted.accuracy >= 0.85, result.as_dict()
    assert result.fingerprinted.p_value < 1e-6
    assert abs(result.clean.accuracy - 0.5) <= 0.3
    assert (run / "metrics.json").exists()


def test_the_secret_is_drawn_against_what_unstamped_images_read():
    # 10 unstamped images: bit 0 read as 1 by 9 of them, bit 1 as 0 by 9, bit 2 split 5/5
    reads = torch.tensor([[1.0, 0.0, float(i % 2)] for i in range(9)] + [[0.0, 1.0, 1.0]])
    draws = torch.stack([new_fingerprint(3, reads) for _ in range(64)])
    assert (draws[:, 0] == 0).all() and (draws[:, 1] == 1).all()  # against the consistent readings
    assert 0 < draws[:, 2].mean() < 1  # an undecided bit stays random
    assert 0 < torch.stack([new_fingerprint(8) for _ in range(64)]).mean() < 1


def test_unstamped_training_images_read_at_most_half_of_the_secret(trained):
    root, run, _ = trained
    model = FingerprintModel.load(run, "cpu")
    clean = [load_image(p) for p in list_images(root)]
    assert sum(model.bit_accuracy(img) for img in clean) / len(clean) <= 0.5


def test_the_fingerprint_is_a_secret_file(trained):
    _, run, _ = trained
    secret = run / SECRET_FILE
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert len(secret.read_text()) == BITS and set(secret.read_text()) <= {"0", "1"}
    for name in ("metrics.json", "config.json", "metrics.jsonl", "fingerprint_model.json"):
        assert secret.read_text() not in (run / name).read_text()


def test_stamping_survives_png_and_other_sizes(trained):
    root, run, _ = trained
    model = FingerprintModel.load(run)
    image = load_image(sorted(root.glob("*.png"))[0])  # 64 x 48: stamped through the 32 px copy
    stamped = model.stamp(image)
    assert stamped.shape == image.shape
    assert model.bit_accuracy(decode_image(encode_png(stamped))) >= 0.75
    other = torch.tensor([1 - b for b in model.fingerprint.tolist()])
    assert model.bit_accuracy(decode_image(encode_png(model.stamp(image, other)))) <= 0.25


def test_detect_command_and_defence_via_the_local_oracle(trained, tmp_path, victim):
    from imgsteal.victim.oracle import LocalOracle

    root, run, _ = trained
    model = FingerprintModel.load(run)
    oracle = LocalOracle(victim, defenses=[FingerprintDefense(model)])
    data = encode_png(torch.rand(3, 12, 16))
    (answer,) = list(oracle.stream([("q", data)]))
    assert oracle.defense_labels == {"fingerprint": 1}
    assert not torch.equal(decode_image(answer.image), decode_image(encode_png(victim.translate(decode_image(data)))))

    stamped_dir, clean_dir = tmp_path / "stamped", tmp_path / "clean"
    for path in sorted(root.glob("*.png")):
        image = load_image(path)
        save_image(model.stamp(image), stamped_dir / path.name)
        save_image(image, clean_dir / path.name)
    runner = CliRunner()
    stamped = runner.invoke(app, ["fingerprint", "detect", "--images", str(stamped_dir), "--model", str(run),
                                  "--json", str(tmp_path / "d.json")])
    assert stamped.exit_code == 0, stamped.output
    clean = runner.invoke(app, ["fingerprint", "detect", "--images", str(clean_dir), "--model", str(run)])
    secret = (run / SECRET_FILE).read_text()
    assert secret not in stamped.output + clean.output + (tmp_path / "d.json").read_text()
    assert detect_fingerprint(model, [load_image(p) for p in list_images(stamped_dir)]).accuracy >= 0.8
    assert "8 images" in stamped.output and "bitwise accuracy" in stamped.output


def test_missing_model_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["fingerprint", "detect", "--images", str(tmp_path), "--model", str(tmp_path)])
    assert result.exit_code == 2 and "imgsteal fingerprint train" in result.output


def test_train_command_prints_accuracies_not_the_fingerprint(tmp_path, trained):
    root, _, _ = trained
    out = tmp_path / "fp"
    result = CliRunner().invoke(app, ["fingerprint", "train", "--images", str(root), "--out", str(out), "--bits", "24",
                                      "--size", "32", "--steps", "3", "--batch-size", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "fingerprinted images:" in result.output and "clean images:" in result.output
    assert (out / SECRET_FILE).read_text() not in result.output
