"""Building a study folder: pair selection, the V/A split, blinding, self-containment, orders."""

from __future__ import annotations

import json
import shutil
import sqlite3
import warnings

import pytest
import yaml
from PIL import Image

from imgsteal.errors import ImgstealError
from imgsteal.study.create import StudySpec, TaskSpec, create_study
from imgsteal.study.model import Source, Study, participant_order


def _selection(study: Study) -> list[tuple[str, str, str]]:
    return sorted((i.task, i.stem, i.source.value) for i in study.items)


def test_pairs_and_victim_share_per_task(tmp_path, task_dirs):
    study = create_study(StudySpec(tasks=task_dirs, pairs=4, victim_share=0.75, seed=1), tmp_path / "s")
    for task in ("monet", "anime"):
        items = [i for i in study.items if i.task == task]
        assert len(items) == 4
        assert sum(i.source is Source.victim for i in items) == 3
        assert len({i.stem for i in items}) == 4  # distinct originals
        assert all(i.stem.startswith(task) for i in items)


def test_paper_defaults():
    spec = StudySpec(tasks=[TaskSpec(name="t", originals="o", victim="v", surrogate="a")])
    assert (spec.pairs, spec.victim_share) == (20, 0.5)


def test_selection_is_reproducible_from_the_seed(tmp_path, task_dirs):
    one = create_study(StudySpec(tasks=task_dirs, pairs=4, seed=5), tmp_path / "one")
    two = create_study(StudySpec(tasks=task_dirs, pairs=4, seed=5), tmp_path / "two")
    other = create_study(StudySpec(tasks=task_dirs, pairs=4, seed=6), tmp_path / "other")
    assert _selection(one) == _selection(two)
    assert _selection(one) != _selection(other)
    # ids are fresh random tokens each time: they carry nothing a participant could decode
    assert {i.id for i in one.items}.isdisjoint({i.id for i in two.items})


def test_study_folder_is_self_contained_and_blind(tmp_path, task_dirs):
    out = tmp_path / "s"
    study = create_study(StudySpec(tasks=task_dirs, pairs=4, seed=2), out)
    shutil.rmtree(tmp_path / "data")  # the inputs are not needed any more
    files = sorted(p.name for p in (out / "images").iterdir())
    assert files == sorted(f"{i}.png" for i in study.image_ids())
    for name in files:
        assert "victim" not in name and "surrogate" not in name and "monet" not in name
        with Image.open(out / "images" / name) as img:
            assert img.format == "PNG"  # the surrogate's JPEGs were re-encoded too
    assert len(study.task("monet").example_images) == 3
    reloaded = Study.load(out)
    assert reloaded == study
    with sqlite3.connect(out / "study.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM participants").fetchone()[0] == 0


def test_default_intro_is_the_papers_scale_and_can_be_overridden(tmp_path, task_dirs):
    study = create_study(StudySpec(tasks=task_dirs, pairs=2, seed=0), tmp_path / "a")
    assert "5 means the styled image looks very much like a Monet painting version" in study.intro
    assert "1 means there is no such resemblance" in study.intro
    assert "does not evaluate your skill" in study.intro
    assert study.task("anime").high_anchor == "Looks very much like an anime character version of the input"
    custom = create_study(StudySpec(tasks=task_dirs, pairs=2, intro="Hello there."), tmp_path / "b")
    assert custom.intro == "Hello there."


def test_yaml_spec_resolves_relative_paths(tmp_path, task_dirs):
    data = tmp_path / "data"
    spec_file = data / "study.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "title": "My study",
                "pairs": 2,
                "victim_share": 0.5,
                "seed": 4,
                "tasks": [
                    {"name": "monet", "style": "Monet painting", "originals": "monet/originals",
                     "victim": "monet/victim", "surrogate": "monet/surrogate", "style_examples": "monet/style"},
                ],
            }
        )
    )
    spec = StudySpec.from_yaml(spec_file)
    assert spec.tasks[0].originals == data / "monet" / "originals"
    study = create_study(spec, tmp_path / "s")
    assert study.title == "My study" and len(study.items) == 2


def test_clear_errors(tmp_path, task_dirs):
    with pytest.raises(ImgstealError, match="9 pairs requested but only 8 images"):
        create_study(StudySpec(tasks=task_dirs, pairs=9), tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written
    bad = task_dirs[0].model_copy(update={"victim": tmp_path / "nope"})
    with pytest.raises(ImgstealError, match="victim folder not found"):
        create_study(StudySpec(tasks=[bad], pairs=2), tmp_path / "y")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("data")
    with pytest.raises(ImgstealError, match="not empty"):
        create_study(StudySpec(tasks=task_dirs, pairs=2), tmp_path / "full")
    shutil.copy(next(task_dirs[0].originals.iterdir()), task_dirs[0].originals / "monet_00.jpg")
    with pytest.raises(ImgstealError, match="share the stem 'monet_00'"):
        create_study(StudySpec(tasks=task_dirs, pairs=2), tmp_path / "z")
    with pytest.raises(ValueError, match="unique"):
        StudySpec(tasks=[task_dirs[0], task_dirs[0]])


def test_warns_when_sizes_would_give_the_source_away(tmp_path, task_dirs):
    task = task_dirs[0]
    for path in task.surrogate.iterdir():
        Image.open(path).resize((20, 20)).save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_study(StudySpec(tasks=[task], pairs=4), tmp_path / "s")
    assert any("for 4 of 4 chosen inputs, F_V's and F_A's outputs differ in size" in str(w.message) for w in caught)
    anime = task_dirs[1]
    for k, path in enumerate(sorted(anime.victim.iterdir())):  # sizes vary per input but match per pair: fine
        Image.open(path).resize((24 + k, 30)).save(path)
    for k, path in enumerate(sorted(anime.surrogate.iterdir())):
        Image.open(path).resize((24 + k, 30)).save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_study(StudySpec(tasks=task_dirs[1:], pairs=4), tmp_path / "t")
    assert not [w for w in caught if "outputs differ in size" in str(w.message)]
    # ...but each styled image has another aspect ratio than its original (40 x 40): a crop or stretch.
    assert any("the original and the styled image differ in aspect ratio" in str(w.message) for w in caught)


def _task_switches(study: Study, order: list[str]) -> int:
    tasks = [study.item_map()[i].task for i in order]
    return sum(a != b for a, b in zip(tasks, tasks[1:]))


def test_participant_order_is_a_seeded_permutation(small_study):
    study = Study.load(small_study)
    ids = sorted(i.id for i in study.items)
    order = participant_order(study, 11)
    assert sorted(order) == ids
    assert order == participant_order(study, 11)
    assert len({tuple(participant_order(study, s)) for s in range(20)}) > 10
    # blocked (default): each task's items stay together, in a shuffled task order
    assert all(_task_switches(study, participant_order(study, s)) == 1 for s in range(20))
    assert len({study.item_map()[participant_order(study, s)[0]].task for s in range(20)}) == 2
    mixed = study.model_copy(update={"order": "mixed"})
    assert sorted(participant_order(mixed, 3)) == ids
    assert max(_task_switches(mixed, participant_order(mixed, s)) for s in range(20)) > 1


def test_study_json_never_names_inputs_outside_the_folder(small_study):
    text = (small_study / "study.json").read_text()
    assert "originals" not in text and "/data/" not in text
    json.loads(text)
