"""The one rule for "this stage is done / can resume / was made with other settings".

Every stage of the pipeline (victim training, harvest, a surrogate cell, scoring) writes into its own
folder and keeps a `stage.json` there:

    {"stage": "harvest", "fingerprint": "<hash of the settings>", "state": "running" | "done",
     "settings": {...}, "facts": {...}, "seconds": 12.3}

- no stage.json (or an empty folder): the stage is new and runs;
- state "running" with the same fingerprint: a killed run; it resumes (training from its last
  checkpoint, a harvest without re-sending answered queries);
- state "done" with the same fingerprint: it is skipped, and its facts (counts, timings) are reused;
- any state with another fingerprint: `SettingsChanged`, naming the folder and the settings that
  differ. Results made with different settings are never mixed; use another output folder.

Settings that only change speed (device, checkpoint interval, concurrency, transport) are left out
of the fingerprint by the caller, so moving a run to a GPU does not invalidate it.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from imgsteal.errors import ImgstealError
from imgsteal.files import atomic_write_text

STAGE_FILE = "stage.json"


class SettingsChanged(ImgstealError):
    """A stage folder holds work made with other settings than the ones asked for now."""


def fingerprint(settings: Any) -> str:
    """A short, stable hash of JSON-able settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


@dataclass
class Stage:
    """One stage's record in `folder/stage.json` (see the module docstring)."""

    folder: Path
    name: str
    settings: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        path = self.folder / STAGE_FILE
        self.record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if self.record and self.record.get("fingerprint") != self.fingerprint:
            old = _flatten(self.record.get("settings", {}))
            new = _flatten(json.loads(json.dumps(self.settings, default=str)))
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["(settings)"]
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise SettingsChanged(f"{self.folder} holds a {self.name} made with other settings (changed: {shown}); "
                                  "use another output folder for the new settings, or delete that folder")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.settings)

    @property
    def done(self) -> bool:
        return self.record.get("state") == "done"

    @property
    def started(self) -> bool:
        """True when a run of this stage began (and may have been killed): resume it."""
        return bool(self.record)

    @property
    def facts(self) -> dict[str, Any]:
        return self.record.get("facts", {})

    @property
    def seconds(self) -> float:
        """How long the run that computed the stage took (kept when the stage is later reused)."""
        return float(self.record.get("seconds", 0.0))

    def _write(self, **record: Any) -> None:
        self.record = {"stage": self.name, "fingerprint": self.fingerprint, "settings": self.settings, **record}
        atomic_write_text(self.folder / STAGE_FILE, json.dumps(self.record, indent=2, default=str))

    def begin(self) -> None:
        """Mark the stage as running (before its first output is written)."""
        if not self.started:
            self._write(state="running", facts={}, seconds=0.0)

    def finish(self, seconds: float = 0.0, **facts: Any) -> None:
        """Mark the stage as done, with the facts later runs reuse (counts, reports) and its duration."""
        self._write(state="done", facts=facts, seconds=round(self.record.get("seconds", 0.0) + seconds, 3))

    @contextmanager
    def running(self) -> Iterator[dict[str, Any]]:
        """`with stage.running() as facts:` begin, run the body, finish with the facts it filled in
        and the time it took (added to the time of earlier, interrupted runs)."""
        self.begin()
        facts: dict[str, Any] = {}
        started = time.perf_counter()
        yield facts
        self.finish(time.perf_counter() - started, **facts)


def stage_state(folder: str | Path) -> str:
    """done | running | new, from `folder/stage.json` alone (no settings check; for status displays)."""
    path = Path(folder) / STAGE_FILE
    if not path.is_file():
        return "new"
    return json.loads(path.read_text(encoding="utf-8")).get("state", "running")


def stage_facts(folder: str | Path) -> dict[str, Any]:
    """The facts a finished stage recorded in `folder/stage.json` ({} when there are none)."""
    path = Path(folder) / STAGE_FILE
    return json.loads(path.read_text(encoding="utf-8")).get("facts", {}) if path.is_file() else {}
