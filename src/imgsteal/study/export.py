"""Ratings database -> one CSV row per rating, with the hidden source and the participant's demographics."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from imgsteal.study.model import DB_FILE, Study
from imgsteal.study.store import StudyStore

CSV_COLUMNS = (
    "participant",  # pseudonymous code, e.g. P0003 (never the secret link token)
    "task",
    "item",
    "source",  # victim (F_V) or surrogate (F_A)
    "rating",  # 1..5
    "answered_at",  # ISO 8601, UTC
    "position",  # 1-based place in this participant's shuffled order
    "gender",
    "age",
    "education",
    "finished",  # 1 if the participant rated every item
    "stem",  # file stem of the original image, for item-level analyses
)


def rating_records(study_dir: str | Path, finished_only: bool = False) -> list[dict[str, object]]:
    """All ratings of a study as dicts keyed by CSV_COLUMNS (demographics '' when not given)."""
    study_dir = Path(study_dir)
    study = Study.load(study_dir)
    items = study.item_map()
    records = []
    for row in StudyStore(study_dir / DB_FILE).rating_rows():
        finished = row["finished_at"] is not None
        if finished_only and not finished:
            continue
        item = items[row["item_id"]]
        records.append(
            {
                "participant": f"P{row['participant_id']:04d}",
                "task": item.task,
                "item": item.id,
                "source": item.source.value,
                "rating": row["rating"],
                "answered_at": row["answered_at"],
                "position": row["position"],
                "gender": row["gender"] or "",
                "age": row["age"] or "",
                "education": row["education"] or "",
                "finished": int(finished),
                "stem": item.stem,
            }
        )
    return records


def ratings_csv(records: list[dict[str, object]]) -> str:
    """Records -> CSV text with a header row."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def export_ratings(study_dir: str | Path, out_csv: str | Path, finished_only: bool = False) -> int:
    """Write the study's ratings to `out_csv`; returns the number of rating rows written."""
    records = rating_records(study_dir, finished_only=finished_only)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    out_csv.write_text(ratings_csv(records), encoding="utf-8")
    return len(records)
