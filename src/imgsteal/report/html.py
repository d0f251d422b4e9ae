"""A small, self-contained HTML report: headings, text, tables, figures and image galleries.

Every stage that reports (evaluate, demo, experiments, defences) builds a `Report` and writes it;
images are referenced by paths relative to the report, so the folder can be zipped and shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape


@dataclass
class Block:
    kind: str  # heading | text | table | gallery | figure | code
    data: dict


@dataclass
class Report:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> "Report":
        self.blocks.append(Block("heading", {"text": text, "level": level}))
        return self

    def text(self, text: str) -> "Report":
        self.blocks.append(Block("text", {"text": text}))
        return self

    def code(self, text: str) -> "Report":
        self.blocks.append(Block("code", {"text": text}))
        return self

    def table(self, header: list[str], rows: list[list[str]], caption: str = "") -> "Report":
        self.blocks.append(Block("table", {"header": header, "rows": rows, "caption": caption}))
        return self

    def gallery(self, columns: list[str], rows: list[list[str]], captions: list[str] | None = None, title: str = "") -> "Report":
        """rows: image paths (relative to the report), one list per row, aligned with `columns`."""
        self.blocks.append(Block("gallery", {"columns": columns, "rows": rows, "captions": captions or [""] * len(rows), "title": title}))
        return self

    def figure(self, path: str, caption: str = "") -> "Report":
        self.blocks.append(Block("figure", {"path": path, "caption": caption}))
        return self

    def render(self) -> str:
        env = Environment(loader=PackageLoader("imgsteal.report", "templates"), autoescape=select_autoescape(["html"]))
        return env.get_template("report.html").render(title=self.title, blocks=self.blocks)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path
