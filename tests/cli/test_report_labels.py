"""A table's caption says what its ± is over, with each test set's own image count."""

from imgsteal.evaluate.summary import Cell, spread_note


def cell(runs: int) -> Cell:
    return Cell(1.0, 0.1, 0.2, [1.0] * runs, 5)


def test_two_test_sets_of_different_sizes_are_each_counted():
    note = spread_note([cell(2)], {"benchmark": 18, "SR benchmark": 16})
    assert "2 surrogate seeds" in note and "benchmark: 18, SR benchmark: 16" in note
    assert "the 18 test images" not in note


def test_one_count_and_one_surrogate():
    assert spread_note([cell(1)], {"a": 3, "b": 3}) == (
        "mean ± std over the 3 test images (one surrogate: the ± is the spread over images, not over seeds)")
    assert "the 7 test images" in spread_note([cell(3)], 7)
