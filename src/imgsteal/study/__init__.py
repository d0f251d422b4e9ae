"""The user study (paper, section 5.4): questionnaire web app, ratings database and statistics.

- `create`:  build a self-contained study folder from originals and F_V / F_A outputs
- `model`:   study.json (tasks, items, wording) and each participant's shuffled order
- `store`:   the SQLite (WAL) ratings database, one transaction per answer
- `app`, `serve`: the questionnaire as server-rendered HTML (FastAPI + jinja2, no JS needed)
- `export`:  ratings -> CSV
- `stats`:   `welch(a, b)` and `tost(a, b, bound_d, alpha)`
- `analyze`, `plots`: per-task report, results.json, Figure 5/6-style plots

See docs/study.md.
"""
