"""Packed queries: several adversary images in one mosaic query (imgsteal.attack.packing)."""

import pytest
import torch

from imgsteal.attack.harvest import harvest, packed_query_count, prepare_image
from imgsteal.attack.packing import compose, shelf_pack
from imgsteal.data.pairs import PairStore
from imgsteal.errors import ImgstealError
from imgsteal.victim.inference import load_translator
from imgsteal.victim.oracle import LocalOracle

from imgsteal_testkit import write_images


def _overlaps(a, b, sizes):
    (wa, ha), (wb, hb) = sizes[a.index], sizes[b.index]
    return a.x < b.x + wb and b.x < a.x + wa and a.y < b.y + hb and b.y < a.y + ha


def test_shelf_pack_keeps_order_stays_under_the_limit_and_never_overlaps():
    sizes = [(114, 64)] * 30 + [(96, 64), (40, 80), (700, 500), (10, 10), (64, 114)]
    limit = 300 * 200
    layouts = shelf_pack(sizes, limit)
    placed = [tile.index for layout in layouts for tile in layout.tiles]
    assert placed == list(range(len(sizes)))  # every image once, in order
    for layout in layouts:
        if len(layout.tiles) > 1:
            assert layout.width * layout.height <= limit
        for tile in layout.tiles:
            w, h = sizes[tile.index]
            assert tile.x + w <= layout.width and tile.y + h <= layout.height
        for i, a in enumerate(layout.tiles):
            assert not any(_overlaps(a, b, sizes) for b in layout.tiles[i + 1:])
    alone = next(layout for layout in layouts if layout.tiles[0].index == 32)
    assert (alone.width, alone.height, len(alone.tiles)) == (700, 500, 1)  # over the limit: sent as it is
    # 114 x 64 tiles under 60,000 px: rows of about sqrt(60,000) = 244 px hold 2; 4 rows (228 x 256) fit
    assert [len(layout.tiles) for layout in layouts[:3]] == [8] * 3


def test_shelf_pack_rejects_a_limit_below_one_pixel():
    with pytest.raises(ImgstealError, match="pack_pixels"):
        shelf_pack([(4, 4)], 0)


def test_compose_puts_each_image_at_its_place():
    images = [torch.full((3, 4, 6), 0.25), torch.full((3, 5, 3), 0.75)]
    (layout,) = shelf_pack([(6, 4), (3, 5)], 100)
    mosaic = compose(layout, images)
    assert mosaic.shape == (3, layout.height, layout.width)
    for tile in layout.tiles:
        h, w = images[tile.index].shape[-2:]
        assert torch.equal(mosaic[:, tile.y:tile.y + h, tile.x:tile.x + w], images[tile.index])
    assert mosaic.sum() == pytest.approx(sum(float(i.sum()) for i in images))  # the rest is black


def test_packed_harvest_sends_fewer_queries_whose_answers_hold_every_image(tmp_path, sr_victim):
    paths = write_images(tmp_path / "x", 7, size=(32, 24))  # 8 x 6 px queries after 4x downscaling
    (tmp_path / "x" / "broken.png").write_bytes(b"not an image")
    inputs = sorted((tmp_path / "x").iterdir())
    victim = load_translator(sr_victim, "cpu")
    limit = 8 * 24  # room for 4 such images in each mosaic (rows of isqrt(192) = 13 px: one image wide)
    assert packed_query_count(inputs, limit, downscale=4) == 2
    with PairStore(tmp_path / "store") as store:
        report = harvest(LocalOracle(victim), inputs, store, downscale=4, pack_pixels=limit, progress=False)
        assert (report.queried, report.images_queried, report.unreadable) == (2, 7, 1)
        records = store.records()
        assert sorted(r.input_size for r in records) == [(8, 18), (8, 24)]
        first = next(r for r in records if r.input_size == (8, 24))
        assert first.source.startswith("packed 4: img_000.png, img_001.png")
        query, answer = store.load_pair(first)
        # the mosaic's top-left tile is the first image, and the answer is F_V of the whole mosaic
        assert torch.allclose(query[:, :6, :8], prepare_image(paths[0], 4), atol=1 / 255)
        with torch.no_grad():
            expected = victim(query[None])[0]
        assert answer.shape == (3, 96, 32) and torch.allclose(answer, expected, atol=1 / 255)
        # a re-run sends nothing; a budget counts mosaics, not images
        assert harvest(LocalOracle(victim), inputs, store, downscale=4, pack_pixels=limit, progress=False).queried == 0
    with PairStore(tmp_path / "capped") as store:
        capped = harvest(LocalOracle(victim), inputs, store, downscale=4, pack_pixels=limit, budget=1, progress=False)
    assert (capped.queried, capped.images_queried) == (1, 4)
