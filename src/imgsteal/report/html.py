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

    def markdown(self, title: bool = True) -> str:
        """The same blocks as Markdown: tables as pipe tables, galleries and figures as image links."""
        parts = [f"# {self.title}"] if title else []
        for block in self.blocks:
            d = block.data
            if block.kind == "heading":
                parts.append(f"{'#' * d['level']} {d['text']}")
            elif block.kind == "text":
                parts.append(d["text"])
            elif block.kind == "code":
                parts.append(f"```\n{d['text']}\n```")
            elif block.kind == "table":
                parts.append((f"**{d['caption']}**\n\n" if d["caption"] else "") + markdown_table(d["header"], d["rows"]))
            elif block.kind == "gallery":
                rows = [[f"![{c}]({path})" for c, path in zip(d["columns"], row)] for row in d["rows"]]
                parts.append((f"**{d['title']}**\n\n" if d["title"] else "") + markdown_table(d["columns"], rows))
            elif block.kind == "figure":
                parts.append(f"![{d['caption']}]({d['path']})\n\n{d['caption']}")
        return "\n\n".join(parts) + "\n"

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table (pipes inside cells escaped)."""
    esc = lambda cell: str(cell).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)
