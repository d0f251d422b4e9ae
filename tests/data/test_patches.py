"""PairedPatchSource: full batches whatever the number of pairs (compute-matched budgets)."""

import pytest
import torch

from imgsteal.attack.methods import natural_epoch_steps
from imgsteal.attack.surrogate import SurrogateConfig
from imgsteal.data.patches import PairedPatchSource


def _pairs(n: int, side: int = 20, scale: int = 2):
    gen = torch.Generator().manual_seed(n)
    xs = [torch.randint(0, 256, (3, side, side), generator=gen, dtype=torch.uint8) for _ in range(n)]
    ys = [x.repeat_interleave(scale, -1).repeat_interleave(scale, -2) for x in xs]
    return xs, ys


@pytest.mark.parametrize("pairs", [1, 4, 16, 59])
def test_patch_batches_are_full_whatever_the_number_of_pairs(pairs):
    xs, ys = _pairs(pairs)
    source = PairedPatchSource(xs, ys, scale=2, patch=8, batch_size=16, seed=0, repeat=5)
    for epoch in range(2):
        for index in range(source.batches_per_epoch):
            x, y = source.batch(epoch, index)
            assert x.shape == (16, 3, 8, 8) and y.shape == (16, 3, 16, 16)
            assert torch.equal(y, x.repeat_interleave(2, -1).repeat_interleave(2, -2))  # crops stay aligned
    x, _ = source.batch(0, 0)
    if pairs == 1:  # one pair: 16 different crops of it, not one crop
        assert len({tuple(c.flatten().tolist()) for c in x}) > 1
    cfg = SurrogateConfig(store="unused", patch=8, batch_size=16, repeat=5)
    assert natural_epoch_steps(cfg, pairs) == source.batches_per_epoch


def test_whole_image_batches_hold_each_image_at_most_once():
    xs, ys = _pairs(3)
    source = PairedPatchSource(xs, ys, scale=2, patch=None, batch_size=16, seed=0)
    x, _ = source.batch(0, 0)
    assert x.shape[0] == 3
    assert natural_epoch_steps(SurrogateConfig(store="unused", patch=None, batch_size=16, repeat=1), 3) == source.batches_per_epoch == 1
