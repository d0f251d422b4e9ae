"""Query selection: random, diverse (k-center on the adversary's descriptors), adaptive (ensemble disagreement)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from imgsteal.attack.oracle import OracleAnswer
from imgsteal.attack.selection import (
    descriptor, harvest_io, k_center_greedy, round_sizes, select_queries,
)
from imgsteal.data.images import decode_image, encode_png, load_image
from imgsteal.data.pairs import PairStore
from imgsteal.errors import ImgstealError


def save(folder: Path, name: str, array: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def clustered_pool(folder: Path) -> tuple[list[Path], dict[Path, str]]:
    """Ten near-identical flat red images, one flat blue, one noisy texture: three kinds, unevenly many."""
    rng = np.random.default_rng(0)
    kinds = {}
    for i in range(10):
        kinds[save(folder, f"red_{i}.png", np.full((16, 16, 3), (200 + i, 10, 10)))] = "red"
    kinds[save(folder, "blue.png", np.full((16, 16, 3), (10, 10, 200)))] = "blue"
    kinds[save(folder, "noise.png", rng.integers(0, 256, (16, 16, 3)))] = "noise"
    return sorted(kinds), kinds


class Recorder:
    """A query function standing in for the oracle: answers with a 2x nearest upscale, records every file."""

    def __init__(self) -> None:
        self.sent: list[Path] = []
        self.calls = 0

    def __call__(self, files):
        self.calls += 1
        self.sent += list(files)
        return [(x := load_image(f), F.interpolate(x[None], scale_factor=2, mode="nearest")[0]) for f in files]


@pytest.mark.parametrize("strategy", ["random", "diverse", "adaptive"])
def test_each_strategy_queries_exactly_its_budget(tmp_path, strategy):
    pool, _ = clustered_pool(tmp_path / "pool")
    query = Recorder()
    result = select_queries(pool, 5, strategy, query, seed=1, rounds=3, ensemble=2, train_steps=2)
    assert result.spent == 5 and len(set(result.queried)) == 5
    assert query.sent == result.queried  # only what was counted was sent, in that order
    assert result.answered == 5 and not result.failed
    assert query.calls == (3 if strategy == "adaptive" else 1) == len(result.rounds)
    again = select_queries(pool, 5, strategy, Recorder(), seed=1, rounds=3, ensemble=2, train_steps=2)
    assert again.queried == result.queried  # deterministic for a seed


def test_diverse_covers_every_kind_of_image(tmp_path):
    pool, kinds = clustered_pool(tmp_path / "pool")
    for seed in range(4):
        result = select_queries(pool, 3, "diverse", Recorder(), seed=seed)
        assert {kinds[p] for p in result.queried} == {"red", "blue", "noise"}


def test_k_center_greedy_and_round_sizes():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 10.0], [10.05, 0.0]])
    assert k_center_greedy(points, 3, first=0) == [0, 4, 3]  # farthest from 0, then farthest from both
    assert k_center_greedy(points, 1, chosen=[0, 2, 3]) == [1]  # 0.1 from 0 beats 0.05 from 2
    with pytest.raises(ValueError, match="cannot choose"):
        k_center_greedy(points, 3, chosen=[0, 1, 2])
    assert round_sizes(10, 4) == [3, 3, 2, 2] and round_sizes(2, 4) == [1, 1] and sum(round_sizes(7, 3)) == 7
    flat, textured = torch.full((3, 16, 16), 0.5), torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert descriptor(flat).shape == descriptor(textured).shape
    assert torch.dist(descriptor(flat), descriptor(textured)) > torch.dist(descriptor(flat), descriptor(flat * 0.9 + 0.05))


class Scaled(torch.nn.Module):
    """A 'surrogate' that answers x * factor: training cannot move it (its only weight gets no gradient)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest") * self.factor + 0 * self.unused


def test_adaptive_asks_where_the_surrogates_disagree_most(tmp_path):
    # Models answering x * 0.5 and x * 1.5 disagree by variance ~ x^2: brightest images first.
    pool = [save(tmp_path / "pool", f"grey_{level:03d}.png", np.full((12, 12, 3), level)) for level in range(0, 250, 25)]
    result = select_queries(pool, 4, "adaptive", Recorder(), rounds=2, ensemble=2, train_steps=1,
                            make_surrogate=lambda scale, seed: Scaled(0.5 + seed % 10))
    first, second = result.rounds
    left = [p for p in pool if p not in first]
    brightest = sorted(left, key=lambda p: load_image(p).mean().item())[-2:]
    assert set(second) == set(brightest)
    assert result.disagreement == sorted(result.disagreement, reverse=True) and result.disagreement[0] > 0


def test_bad_input_fails_before_any_query(tmp_path, capsys):
    pool, _ = clustered_pool(tmp_path / "pool")
    broken = tmp_path / "pool" / "broken.png"
    broken.write_bytes(b"not a png at all")
    query = Recorder()
    with pytest.raises(ImgstealError, match="unknown query-selection strategy 'smart'"):
        select_queries(pool, 2, "smart", query)
    with pytest.raises(ImgstealError, match="at least 1 query"):
        select_queries(pool, 0, "random", query)
    with pytest.raises(ImgstealError, match="budget of 13 queries is more than the 12 usable images .*1 unreadable"):
        select_queries(pool + [broken], 13, "diverse", query)
    assert "broken.png" in capsys.readouterr().err  # the skipped file is named
    assert query.calls == 0
    result = select_queries(pool + [broken], 12, "random", query)
    assert result.spent == 12 and result.unreadable == [broken] and broken not in query.sent


def test_duplicate_images_are_never_sent_twice(tmp_path):
    a = save(tmp_path / "pool", "a.png", np.full((8, 8, 3), 100))
    b = save(tmp_path / "pool", "b.png", np.full((8, 8, 3), 100))
    c = save(tmp_path / "pool", "c.png", np.full((8, 8, 3), 7))
    result = select_queries([a, b, c], 2, "random", Recorder())
    assert result.duplicates == 1 and set(result.queried) == {a, c}
    with pytest.raises(ImgstealError, match="3 queries is more than the 2 usable images"):
        select_queries([a, b, c], 3, "random", Recorder())


class UpscaleOracle:
    """An in-process Oracle (PNG in, 2x nearest PNG out) that counts what it answered."""

    concurrency = 1

    def __init__(self) -> None:
        self.answered = 0

    def stream(self, requests):
        for key, data in requests:
            self.answered += 1
            x = decode_image(data)
            yield OracleAnswer(key, encode_png(F.interpolate(x[None], scale_factor=2, mode="nearest")[0]))

    def close(self) -> None:
        pass


def test_harvest_io_stores_every_answer_and_sends_each_image_once(tmp_path):
    pool, _ = clustered_pool(tmp_path / "pool")
    oracle = UpscaleOracle()
    with PairStore(tmp_path / "pairs") as store:
        prepare, query = harvest_io(oracle, store, downscale=2)
        result = select_queries(pool, 4, "adaptive", query, prepare=prepare, rounds=2, ensemble=2, train_steps=2)
        assert result.spent == 4 == oracle.answered == len(store) == result.answered
        assert {r.source for r in store.records()} == {str(p) for p in result.queried}
        x, y = store.load_pair(store.records()[0])
        assert x.shape[-1] == 8 and y.shape[-1] == 16  # queries were downscaled 2x, as prepared
