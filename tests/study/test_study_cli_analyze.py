"""`imgsteal study create / export / analyze` from the command line, and the analysis outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.errors import ImgstealError
from imgsteal.study.analyze import analyze_ratings, read_ratings_csv
from imgsteal.study.export import CSV_COLUMNS
from imgsteal.study.model import Study
from imgsteal.study.stats import tost, welch
from imgsteal.study.store import StudyStore

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _synthetic_ratings(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    rows, groups = [], {}
    for task, shift in (("monet", 0.0), ("anime", 0.6)):
        for source in ("victim", "surrogate"):
            values = np.clip(np.round(rng.normal(3.2 - (shift if source == "surrogate" else 0), 1.2, size=60)), 1, 5).astype(int)
            groups[(task, source)] = values.tolist()
    genders = ["Female", "Male", "", "Prefer not to say"]
    for p in range(12):
        for (task, source), values in groups.items():
            for k in range(5):
                rows.append({
                    "participant": f"P{p:04d}", "task": task, "item": f"{task}-{source}-{k}", "source": source,
                    "rating": values[p * 5 + k], "answered_at": "2024-01-01T00:00:00+00:00", "position": k + 1,
                    "gender": genders[p % 4], "age": "25-34" if p % 2 else "18-24", "education": "Doctorate",
                    "finished": 1, "stem": f"s{k}",
                })  # fmt: skip
    return _write_csv(tmp_path / "ratings.csv", rows), groups


def test_create_export_via_cli(tmp_path, task_dirs):
    monet, anime = task_dirs
    out = tmp_path / "study"
    args = ["study", "create", "--out", str(out), "--pairs", "4", "--victim-share", "0.5", "--seed", "9"]
    for t in (monet, anime):
        args += ["--task", t.name, "--originals", str(t.originals), "--victim", str(t.victim), "--surrogate", str(t.surrogate),
                 "--style", t.style, "--style-examples", str(t.style_examples)]  # fmt: skip
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert "task monet: 2 F_V + 2 F_A pairs, 3 style examples" in result.output
    study = Study.load(out)
    assert [t.style for t in study.tasks] == ["Monet painting", "anime character"]
    assert study.seed == 9

    # a participant answers two items through the store, then the CLI exports them
    store = StudyStore(out / "study.sqlite")
    from imgsteal.study.model import participant_order

    participant = store.new_participant(lambda seed: participant_order(study, seed))
    store.save_demographics(participant.token, {"gender": "Male", "age": None, "education": None})
    store.record_rating(participant.token, participant.order[0], 5)
    store.record_rating(participant.token, participant.order[1], "2")
    result = _invoke("study", "export", str(out), "--out", str(tmp_path / "r.csv"))
    assert result.exit_code == 0 and "2 ratings written" in result.output
    with (tmp_path / "r.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    items = study.item_map()
    assert [(r["item"], r["rating"], r["position"]) for r in rows] == [(participant.order[0], "5", "1"), (participant.order[1], "2", "2")]
    assert all(r["source"] == items[r["item"]].source.value and r["task"] == items[r["item"]].task for r in rows)
    assert rows[0]["participant"] == "P0001" and rows[0]["gender"] == "Male" and rows[0]["finished"] == "0"
    assert participant.token not in (tmp_path / "r.csv").read_text()  # the link is a credential, never exported
    result = _invoke("study", "export", str(out), "--out", str(tmp_path / "f.csv"), "--finished-only")
    assert "0 ratings written" in result.output


def test_cli_errors_are_one_line(tmp_path, task_dirs):
    t = task_dirs[0]
    result = _invoke("study", "create", "--out", str(tmp_path / "s"), "--task", "a", "--task", "b", "--originals", str(t.originals),
                     "--victim", str(t.victim), "--surrogate", str(t.surrogate))  # fmt: skip
    assert result.exit_code == 2 and "--originals must be given once per --task" in result.output
    result = _invoke("study", "create", "--out", str(tmp_path / "s"), "--task", "a", "--originals", str(t.originals),
                     "--victim", str(t.victim), "--surrogate", str(t.surrogate), "--pairs", "50")  # fmt: skip
    assert result.exit_code == 2 and "50 pairs requested" in result.output
    result = _invoke("study", "serve", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "not a study folder" in result.output
    result = _invoke("study", "analyze", str(tmp_path / "missing.csv"))
    assert result.exit_code == 2 and "ratings file not found" in result.output


def test_analyze_cli_report_json_and_plots(tmp_path):
    csv_path, groups = _synthetic_ratings(tmp_path)
    out = tmp_path / "analysis"
    result = _invoke("study", "analyze", str(csv_path), "--out", str(out), "--bound-d", "0.3")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["bound_d"] == 0.3 and results["alpha"] == 0.05 and results["n_participants"] == 12
    for task_result in results["tasks"]:
        v = groups[(task_result["task"], "victim")]
        a = groups[(task_result["task"], "surrogate")]
        w, q = welch(v, a), tost(v, a, 0.3, 0.05)
        assert task_result["welch"]["t"] == pytest.approx(w.t) and task_result["welch"]["df"] == pytest.approx(w.df)
        assert task_result["welch"]["p"] == pytest.approx(w.p)
        assert task_result["tost"]["bound_raw"] == pytest.approx(q.bound_raw)
        assert task_result["tost"]["p_lower"] == pytest.approx(q.p_lower) and task_result["tost"]["p_upper"] == pytest.approx(q.p_upper)
        assert task_result["tost"]["equivalent"] == q.equivalent
        assert task_result["victim"]["ratings_histogram"] == {str(s): v.count(s) for s in range(1, 6)}
        # the printed table states both the d bound and the raw bound, and the verdict
        assert f"+-{q.bound_raw:.3f} rating points" in result.output
        assert f"t = {w.t:.3f}, df = {w.df:.1f}, p = {w.p:.4g}" in result.output
        assert f"d = +-{q.smallest_equivalent_bound_d:.3f}" in result.output
    assert "EQUIVALENT" in result.output or "equivalence NOT shown" in result.output
    assert results["demographics"]["gender"] == {"Female": 3, "Male": 3, "(not given)": 3, "Prefer not to say": 3}
    for stem in ("scores", "demographics"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (out / f"{stem}.svg").read_text()[:2000]


def test_analyze_handles_untestable_tasks_and_bad_rows(tmp_path):
    rows = [{"task": "flat", "source": s, "rating": 3} for s in ("victim", "surrogate") for _ in range(3)]
    rows += [{"task": "ok", "source": s, "rating": r} for s in ("victim", "surrogate") for r in (1, 3, 5)]
    analysis = analyze_ratings(read_ratings_csv(_write_csv(tmp_path / "a.csv", rows)))
    flat, ok = analysis.tasks
    assert flat.welch is None and "zero variance" in flat.error
    assert ok.welch is not None and ok.welch.t == 0.0
    assert json.dumps(analysis.to_dict())  # JSON-safe

    bad = _write_csv(tmp_path / "b.csv", [{"task": "t", "source": "victim", "rating": 7}])
    with pytest.raises(ImgstealError, match=r"line 2: rating must be from 1 to 5, got 7"):
        read_ratings_csv(bad)
    bad = _write_csv(tmp_path / "c.csv", [{"task": "t", "source": "human", "rating": 3}])
    with pytest.raises(ImgstealError, match="source must be 'victim' or 'surrogate'"):
        read_ratings_csv(bad)
    bad = _write_csv(tmp_path / "d.csv", [{"task": "t", "score": 3}])
    with pytest.raises(ImgstealError, match="missing column"):
        read_ratings_csv(bad)
