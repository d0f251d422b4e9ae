"""End to end in real headless Chromium: `imgsteal study serve` in a subprocess, a participant clicks
through the questionnaire, and the database and the exported CSV hold exactly the clicked ratings.

Uses Debian's /usr/bin/chromium through Playwright (never a downloaded browser). Without it the
test is skipped locally, but fails under CI=true, where the browser is installed on purpose.
"""

from __future__ import annotations

import csv
import os
import queue
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from imgsteal.study.export import export_ratings
from imgsteal.study.model import Study

CHROMIUM = Path("/usr/bin/chromium")
PLAN = [3, 5, 1, 4, 2, 2, 5, 1]  # the rating clicked at each position
pytestmark = pytest.mark.browser


def _require_browser():
    """Return playwright's sync API, or skip (locally) / fail (CI=true) with the reason."""
    reason = None
    try:
        from playwright import sync_api
    except ImportError:
        sync_api, reason = None, "the Python package 'playwright' is not installed (pip install -e '.[dev]')"
    if reason is None and not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    return sync_api


class _Server:
    """`imgsteal study serve STUDY --port 0` as a child process; reads the URLs it announces."""

    def __init__(self, study_dir: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from imgsteal.cli import main; main()", "study", "serve", str(study_dir), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self._announced("participants: ")
        self.admin_url = self._announced("results: ").split()[0]
        self.admin_key = self._announced("admin key (keep private): ")

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _announced(self, prefix: str) -> str:
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=60)
            except queue.Empty:
                raise AssertionError(f"server did not announce {prefix!r}; output: {seen}") from None
            seen.append(line)
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _submit(page, selector: str) -> None:
    """Click a form button and wait for the page it leads to (POST -> 303 -> GET) to load."""
    with page.expect_navigation():
        page.click(selector)


def test_participant_completes_the_questionnaire_in_chromium(small_study, tmp_path):
    sync_api = _require_browser()
    study = Study.load(small_study)
    assert len(study.items) == len(PLAN)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    server = _Server(small_study)
    assert server.url.startswith("http://127.0.0.1:")
    clicked: dict[str, int] = {}
    console_errors: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server.url)
            page.screenshot(path=str(shots / "intro.png"), full_page=True)
            _submit(page, "#start")

            assert page.locator("h1").inner_text().startswith("About you")
            for field, answer in (("gender", "Male"), ("age", "35-44"), ("education", "Master's degree")):
                page.click(f"label.option:has(input[name={field}][value=\"{answer}\"])")
                assert page.locator(f"input[name={field}]:checked").get_attribute("value") == answer
            page.screenshot(path=str(shots / "demographics.png"), full_page=True)
            _submit(page, "#demographics-continue")
            link = page.url

            for position, rating in enumerate(PLAN, start=1):
                assert page.inner_text("#progress") == f"{position} / {len(PLAN)}"
                item = page.input_value("input[name=item]")
                assert item not in clicked
                assert page.locator(".pair img").count() == 2
                if position == 2:  # keys 1-5 pick a rating (progressive enhancement)
                    page.keyboard.press("4")
                    assert page.locator("input[name=rating]:checked").get_attribute("value") == "4"
                page.click(f"label.choice[data-rating='{rating}']")
                assert page.locator("input[name=rating]:checked").get_attribute("value") == str(rating)
                if position == 1:
                    page.screenshot(path=str(shots / "item.png"), full_page=True)
                if position == len(PLAN):
                    page.fill("textarea[name=comment]", "<b>Nice</b> study")
                    assert page.inner_text("#next") == "Finish"
                clicked[item] = rating
                _submit(page, "#next")

            assert page.locator("h1").inner_text() == "Thank you!"
            assert page.locator(".comment-echo").inner_text() == "<b>Nice</b> study"  # shown as text, not markup
            page.screenshot(path=str(shots / "thanks.png"), full_page=True)

            # the personal link in a fresh browser (no cookie) lands on the thank-you page
            other = browser.new_context()
            again = other.new_page()
            again.goto(link)
            assert again.locator("h1").inner_text() == "Thank you!"
            other.close()

            # the questionnaire works with JavaScript switched off
            no_js = browser.new_context(java_script_enabled=False)
            plain = no_js.new_page()
            plain.goto(server.url)
            _submit(plain, "#start")
            _submit(plain, "#demographics-skip")
            plain.click("label.choice[data-rating='2']")
            _submit(plain, "#next")
            assert plain.inner_text("#progress") == f"2 / {len(PLAN)}"
            no_js.close()

            # the researcher signs in with the admin key; it never appears in a URL
            admin = browser.new_context().new_page()
            admin.goto(server.admin_url)
            assert admin.locator("#admin-sign-in").count() == 1
            admin.fill("input[name=key]", server.admin_key)
            _submit(admin, "#admin-sign-in")
            assert admin.locator("h1").inner_text() == "Results so far"
            assert server.admin_key not in admin.url and admin.url == server.admin_url
            assert admin.locator("#ratings-csv").get_attribute("href").endswith("/admin/ratings.csv")
            browser.close()
    finally:
        server.stop()

    assert not console_errors, console_errors  # e.g. nothing blocked by the Content-Security-Policy
    for name in ("intro", "demographics", "item", "thanks"):
        assert (shots / f"{name}.png").stat().st_size > 5000

    with sqlite3.connect(small_study / "study.sqlite") as conn:
        rows = conn.execute(
            "SELECT r.item_id, r.rating FROM ratings r JOIN participants p ON p.id = r.participant_id WHERE p.id = 1"
        ).fetchall()
        person = conn.execute("SELECT gender, age, education, comment, finished_at FROM participants WHERE id = 1").fetchone()
    assert dict(rows) == clicked
    assert person[:4] == ("Male", "35-44", "Master's degree", "<b>Nice</b> study") and person[4] is not None

    out = tmp_path / "ratings.csv"
    export_ratings(small_study, out)
    with out.open() as handle:
        exported = [r for r in csv.DictReader(handle) if r["participant"] == "P0001"]
    items = study.item_map()
    assert {r["item"]: int(r["rating"]) for r in exported} == clicked
    assert [int(r["rating"]) for r in sorted(exported, key=lambda r: int(r["position"]))] == PLAN
    for r in exported:
        assert r["source"] == items[r["item"]].source.value and r["task"] == items[r["item"]].task
        assert (r["gender"], r["age"], r["education"], r["finished"]) == ("Male", "35-44", "Master's degree", "1")
