import json

import pytest
import torch

from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
from imgsteal.errors import CheckpointError, ImgstealError
from imgsteal.models import build_model
from imgsteal.train.checkpoint import load_checkpoint, restore_training_state, save_checkpoint
from imgsteal.train.loop import run_training
from imgsteal.train.paired import PixelRecipe


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model = build_model("srresnet", scale=2, n_blocks=1, channels=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 8, 8)).mean().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c", {"task": "sr", "archs": {"g": model.build_spec}}, {"g": model}, {"g": opt}, {"k": 3})
    expected_rand = torch.rand(3)  # drawn after the save: the restored RNG must draw it again

    fresh = build_model("srresnet", scale=2, n_blocks=1, channels=4)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    extra = restore_training_state(load_checkpoint(path), {"g": fresh}, {"g": fresh_opt})
    assert extra == {"k": 3}
    assert torch.equal(torch.rand(3), expected_rand)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    state_a, state_b = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert torch.equal(state_a[0]["exp_avg"], state_b[0]["exp_avg"])
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["versions"]["torch"] == torch.__version__
    rebuilt = load_checkpoint(path).build_module("g")
    assert isinstance(rebuilt, type(model))


def test_load_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)


def _source(seed=0):
    torch.manual_seed(123)
    xs = [to_uint8_tensor(torch.rand(3, 12, 12)) for _ in range(6)]
    ys = [to_uint8_tensor(torch.rand(3, 24, 24)) for _ in range(6)]
    return PairedPatchSource(xs, ys, scale=2, patch=8, batch_size=2, seed=seed)


def _recipe(decay_steps=None):
    torch.manual_seed(0)
    return PixelRecipe(build_model("srresnet", scale=2, n_blocks=1, channels=4), torch.device("cpu"), lr=1e-3,
                       decay_steps=decay_steps)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("decay_steps", [None, 9])  # constant rate; annealed over the run
def test_killed_run_resumes_at_the_right_step_and_matches_an_uninterrupted_run(tmp_path, decay_steps):
    meta = {"task": "sr", "scale": 2}
    full = run_training(_recipe(decay_steps), _source(), run_dir=tmp_path / "full", epochs=3, meta=meta, checkpoint_every=2, progress=False)

    def stop_at_7(step):
        if step == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_training(_recipe(decay_steps), _source(), run_dir=tmp_path / "cut", epochs=3, meta=meta, checkpoint_every=2,
                     progress=False, on_step=stop_at_7)
    last = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.safetensors")
    assert last.meta["step"] == 6 and last.meta["epoch"] == 2  # step 6 = first checkpoint of epoch 2 (3 steps/epoch)
    with pytest.raises(ImgstealError, match="--resume"):
        run_training(_recipe(), _source(), run_dir=tmp_path / "cut", epochs=3, meta=meta, progress=False)
    resumed = run_training(_recipe(decay_steps), _source(), run_dir=tmp_path / "cut", epochs=3, meta=meta, checkpoint_every=2,
                           progress=False, resume=True)
    assert resumed.resumed_from_step == 6 and resumed.steps == full.steps == 9
    a = load_checkpoint(full.model_path).module_state("generator")
    b = load_checkpoint(resumed.model_path).module_state("generator")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_annealed_rate_falls_from_lr_to_zero_on_a_cosine():
    def rates(recipe, steps=13):  # the rate each step trained at
        source, seen = _source(), []
        for step in range(steps):
            recipe.train_step(source.batch(0, step % source.batches_per_epoch))
            seen.append(recipe.optimizers["generator"].param_groups[0]["lr"])
        return seen

    annealed = rates(_recipe(decay_steps=10))
    assert [annealed[k] for k in (0, 5, 10, 12)] == pytest.approx([1e-3, 5e-4, 0.0, 0.0])
    assert rates(_recipe(), steps=8)[7] == 1e-3


def test_batches_are_deterministic_and_aligned():
    src = _source(seed=5)
    x1, y1 = src.batch(1, 2)
    x2, y2 = src.batch(1, 2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (2, 3, 8, 8) and y1.shape == (2, 3, 16, 16)
    assert not torch.equal(src.batch(2, 2)[0], x1)


def test_prefetched_batches_are_the_batches_in_order():
    # On a GPU the loop prepares batches ahead in a thread; that must not change which batch comes when.
    from imgsteal.train.loop import _batches

    src = _source(seed=3)
    positions = [(0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]  # a resumed run starts mid-epoch
    direct = list(_batches(src, positions, ahead=0))
    ahead = list(_batches(src, positions, ahead=2))
    assert len(direct) == len(ahead) == len(positions)
    for (x1, y1), (x2, y2), position in zip(direct, ahead, positions):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(x1, src.batch(*position)[0])
    # A consumer that stops early (an interrupted run) shuts the worker down cleanly.
    early = _batches(src, positions, ahead=2)
    next(early)
    early.close()


@pytest.mark.parametrize("augmentation", ["none", "flip", "contrast"])
def test_crops_and_paired_augmentations_keep_pairs_aligned(augmentation):
    torch.manual_seed(1)
    xs = [to_uint8_tensor(torch.rand(3, 10, 14)) for _ in range(4)]
    ys = [x.repeat_interleave(2, 1).repeat_interleave(2, 2) for x in xs]  # exact 2x nearest upscale
    src = PairedPatchSource(xs, ys, scale=2, patch=6, batch_size=4, seed=0, augmentation=augmentation)
    for index in range(src.batches_per_epoch):
        x, y = src.batch(0, index)
        expected = x.repeat_interleave(2, 2).repeat_interleave(2, 3)
        if augmentation == "contrast":  # nearest upscaling keeps the mean, so contrast matches up to rounding
            assert torch.allclose(y, expected, atol=1e-5)
        else:
            assert torch.equal(y, expected)
