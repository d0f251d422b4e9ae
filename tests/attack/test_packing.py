"""Packed queries: several adversary images in one mosaic query (imgsteal.attack.packing)."""

import pytest
import torch

from imgsteal.attack.harvest import harvest, packed_query_count, prepare_image
from imgsteal.attack.packing import compose, shelf_pack
from pathlib import Path

from imgsteal.data.images import decode_image
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


def test_packed_harvest_sends_fewer_queries_and_stores_every_image_with_its_answer(tmp_path, sr_victim):
    paths = write_images(tmp_path / "x", 7, size=(32, 24))  # 8 x 6 px queries after 4x downscaling
    (tmp_path / "x" / "broken.png").write_bytes(b"not an image")
    inputs = sorted((tmp_path / "x").iterdir())
    victim = load_translator(sr_victim, "cpu")
    limit = 8 * 24  # room for 4 such images in each mosaic (rows of isqrt(192) = 13 px: one image wide)
    assert packed_query_count(inputs, limit, downscale=4) == 2
    sent = []

    class Recording(LocalOracle):
        def stream(self, requests):
            return super().stream((key, sent.append(data) or data) for key, data in requests)

    with PairStore(tmp_path / "store") as store:
        report = harvest(Recording(victim), inputs, store, downscale=4, pack_pixels=limit, progress=False)
        assert (report.queried, report.images_queried, report.unreadable) == (2, 7, 1)
        assert len(sent) == 2 and store.query_count() == 2 and len(store) == 7  # 2 queries, a pair per image
        records = store.records()
        assert all(r.input_size == (8, 6) and r.output_size == (32, 24) for r in records)
        assert sorted(Path(r.source).name for r in records) == [p.name for p in paths]
        assert len({r.query for r in records}) == 2 and report.spent_usd == pytest.approx(store.total_cost())
        # each image's answer is its region of F_V(mosaic): the victim's answer in context
        first = next(r for r in records if Path(r.source).name == "img_000.png")
        x, y = store.load_pair(first)
        assert torch.allclose(x, prepare_image(paths[0], 4), atol=1 / 255)
        mosaic = decode_image(sent[0])
        with torch.no_grad():
            in_context = victim(mosaic[None])[0][:, :24, :32]
        assert torch.allclose(y, in_context, atol=1 / 255)
        # a re-run sends nothing
        again = harvest(Recording(victim), inputs, store, downscale=4, pack_pixels=limit, progress=False)
        assert again.queried == 0 and again.already_stored == 2 and len(sent) == 2
    with PairStore(tmp_path / "capped") as store:  # a budget counts queries, not images
        capped = harvest(LocalOracle(victim), inputs, store, downscale=4, pack_pixels=limit, budget=1, progress=False)
        assert (capped.queried, capped.images_queried, capped.budget_left, len(store)) == (1, 4, 0, 4)


def test_budgets_and_subsets_count_queries_and_keep_a_packed_query_whole(tmp_path):
    from imgsteal.attack.surrogate import select_budget

    with PairStore(tmp_path / "s") as store:
        for i in range(9):  # 3 packed queries of 3 images each, then 2 single-image queries
            store.add(b"in%d" % i, b"out", source=None, input_size=(1, 1), output_size=(1, 1), cost_usd=0.1,
                      query_sha256=f"mosaic{i // 3}" if i < 9 else None)
        store.add(b"single1", b"o", source=None, input_size=(1, 1), output_size=(1, 1), cost_usd=0.1)
        store.add(b"single2", b"o", source=None, input_size=(1, 1), output_size=(1, 1), cost_usd=0.1)
        assert store.query_count() == 5 and store.has("mosaic1")
        half = store.select(0.6, seed=0)  # 3 of 5 queries
        assert len({r.query for r in half}) == 3
        for budget in (1, 2, 3):
            chosen = select_budget(store.select(1.0, 0), budget, 0)
            groups = {r.query for r in chosen}
            assert len(groups) == budget
            assert all(sum(r.query == g for r in chosen) == (3 if g.startswith("mosaic") else 1) for g in groups)
        assert {r.query for r in select_budget(store.select(1.0, 0), 2, 0)} <= \
            {r.query for r in select_budget(store.select(1.0, 0), 3, 0)}  # nested
        with pytest.raises(ImgstealError, match="budget of 6 queries is more than the 5 queries"):
            select_budget(store.select(1.0, 0), 6, 0)
