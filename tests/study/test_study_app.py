"""The questionnaire over real HTTP (uvicorn on 127.0.0.1): validation, atomicity, resume, escaping."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import httpx

from imgsteal.study.model import Study, participant_order
from imgsteal.study.store import StudyStore

ITEM_RE = re.compile(r'name="item" value="([0-9a-f]+)"')
PROGRESS_RE = re.compile(r'id="progress">([^<]+)<')


def _client(server: str) -> httpx.Client:
    return httpx.Client(base_url=server, follow_redirects=False, timeout=10)


def _start(client: httpx.Client, demographics: dict | None = None) -> str:
    r = client.post("/start")
    assert r.status_code == 303
    path = r.headers["location"]
    assert re.fullmatch(r"/p/[A-Za-z0-9_-]{20,}", path)
    r = client.post(f"{path}/demographics", data=demographics if demographics is not None else {"skip": "1"})
    assert r.status_code == 303
    return path


def _current(client: httpx.Client, path: str) -> tuple[str, str]:
    html = client.get(path).text
    return ITEM_RE.search(html).group(1), PROGRESS_RE.search(html).group(1)


def _message(response: httpx.Response) -> str:
    """The error page's message, unescaped back to plain text for comparison."""
    import html

    return html.unescape(re.search(r'class="error-message">([^<]*)<', response.text).group(1))


def _db(study_dir: Path, sql: str, *args):
    with sqlite3.connect(study_dir / "study.sqlite") as conn:
        return conn.execute(sql, args).fetchall()


def _state(study_dir: Path) -> tuple:
    return (_db(study_dir, "SELECT * FROM ratings ORDER BY participant_id, position"), _db(study_dir, "SELECT * FROM participants"))


def test_complete_flow_records_what_was_answered(server, small_study):
    study = Study.load(small_study)
    with _client(server) as client:
        intro = client.get("/")
        assert intro.status_code == 200 and "Start the study" in intro.text
        assert "Looks very much like a Monet painting version of the input" in intro.text
        path = _start(client, {"gender": "Female", "age": "25-34", "education": "Doctorate"})
        given = {}
        for k in range(len(study.items)):
            item, progress = _current(client, path)
            assert progress == f"{k + 1} / {len(study.items)}"
            given[item] = k % 5 + 1
            r = client.post(f"{path}/rate", data={"item": item, "rating": str(given[item])})
            assert r.status_code == 303 and r.headers["location"] == path
        done = client.get(path)
        assert "Thank you" in done.text
    token = path.rsplit("/", 1)[1]
    participant = StudyStore(small_study / "study.sqlite").participant(token)
    assert participant.finished and (participant.gender, participant.age, participant.education) == ("Female", "25-34", "Doctorate")
    assert participant.order == participant_order(study, participant.seed)  # seed and order recorded
    rows = _db(small_study, "SELECT item_id, rating, position FROM ratings")
    assert {item: rating for item, rating, _ in rows} == given
    assert sorted(pos for _, _, pos in rows) == list(range(1, len(study.items) + 1))
    assert all(participant.order[pos - 1] == item for item, _, pos in rows)


def test_out_of_range_or_malformed_rating_is_refused_and_nothing_stored(server, small_study):
    with _client(server) as client:
        path = _start(client)
        item, _ = _current(client, path)
        before = _state(small_study)
        for rating in ("0", "6", "3.5", "three", "-1", " ", "10", "٣"):
            r = client.post(f"{path}/rate", data={"item": item, "rating": rating, "comment": "should not be kept"})
            assert r.status_code == 422, rating
            message = _message(r)  # e.g. "Rating must be from 1 to 5, got 6." / "Missing field 'rating': ..."
            assert "rating" in message.lower() and "from 1 to 5" in message
            assert _state(small_study) == before
        assert _current(client, path)[1].startswith("1 / ")


MISSING_OR_UNKNOWN = [
    ({"rating": "3"}, "Missing field 'item': the form did not say which image pair was rated."),
    ({"item": "@ITEM"}, "Missing field 'rating': please choose a rating from 1 to 5."),
    ({}, "Missing field 'item': the form did not say which image pair was rated."),
    ({"item": "0123456789ab", "rating": "3"}, "Unknown item: this image pair is not part of your questionnaire."),
]


def test_missing_field_or_unknown_item_is_refused(server, small_study):
    with _client(server) as client:
        path = _start(client)
        item, _ = _current(client, path)
        before = _state(small_study)
        for data, message in MISSING_OR_UNKNOWN:
            data = {k: (item if v == "@ITEM" else v) for k, v in data.items()}
            r = client.post(f"{path}/rate", data=data)
            assert r.status_code == 422
            assert _message(r) == message
            assert "Back to the questionnaire" in r.text
            assert _state(small_study) == before


def test_duplicate_field_and_rating_twice_are_refused(server, small_study):
    with _client(server) as client:
        path = _start(client)
        item, _ = _current(client, path)
        r = client.post(f"{path}/rate", content=f"item={item}&rating=2&rating=5", headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 422 and _message(r) == "The field 'rating' was sent more than once."
        assert client.post(f"{path}/rate", data={"item": item, "rating": "2"}).status_code == 303
        r = client.post(f"{path}/rate", data={"item": item, "rating": "5"})
        assert r.status_code == 409 and _message(r) == "You have already rated this image pair; please continue with the next one."
    assert _db(small_study, "SELECT rating FROM ratings") == [(2,)]


def test_finished_participant_cannot_submit_again(server, small_study):
    n = len(Study.load(small_study).items)
    with _client(server) as client:
        path = _start(client)
        for _ in range(n):
            item, _ = _current(client, path)
            client.post(f"{path}/rate", data={"item": item, "rating": "4"})
        before = _state(small_study)
        r = client.post(f"{path}/rate", data={"item": item, "rating": "1"})
        assert r.status_code == 409
        assert _message(r) == "You have already completed this study; your answers were recorded and cannot be changed."
        r = client.post(f"{path}/demographics", data={"gender": "Male"})
        assert r.status_code == 409
        assert _state(small_study) == before
        # the browser's cookie leads back to the finished participant, not to a second one
        assert client.post("/start").headers["location"] == path
        assert "already completed" in client.get("/").text
    assert _db(small_study, "SELECT COUNT(*) FROM participants") == [(1,)]


def test_resume_with_the_link_in_a_fresh_browser(server, small_study):
    with _client(server) as first:
        path = _start(first)
        for rating in ("5", "1"):
            item, _ = _current(first, path)
            first.post(f"{path}/rate", data={"item": item, "rating": rating})
    token = path.rsplit("/", 1)[1]
    order = StudyStore(small_study / "study.sqlite").participant(token).order
    with _client(server) as second:  # no cookie: only the link
        item, progress = _current(second, path)
        assert progress == f"3 / {len(order)}"
        assert item == order[2]
        assert second.post(f"{path}/rate", data={"item": item, "rating": "3"}).status_code == 303
    assert _db(small_study, "SELECT rating FROM ratings ORDER BY position") == [(5,), (1,), (3,)]


def test_unknown_participant_and_admin_key(server):
    with _client(server) as client:
        r = client.get("/p/not-a-real-token-at-all")
        assert r.status_code == 404 and "link is not valid" in _message(r)
        assert client.post("/p/not-a-real-token/rate", data={"item": "x", "rating": "3"}).status_code == 404
        assert client.get("/admin/wrong-key").status_code == 404
        assert client.get("/admin/wrong-key/ratings.csv").status_code == 404
        assert client.get("/admin", headers={"X-Admin-Key": "wrong-key"}).status_code == 401
        assert client.get("/admin/ratings.csv", headers={"X-Admin-Key": "wrong-key"}).status_code == 404


def test_comment_with_script_is_escaped_everywhere(server, small_study):
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    n = len(Study.load(small_study).items)
    with _client(server) as client:
        path = _start(client)
        for k in range(n):
            r = client.get(path)
            item = ITEM_RE.search(r.text).group(1)
            data = {"item": item, "rating": "3"}
            if k == n - 1:
                assert 'name="comment"' in r.text  # the comment box is on the last pair
                data["comment"] = payload
            client.post(f"{path}/rate", data=data)
        thanks = client.get(path)
        admin_key = StudyStore(small_study / "study.sqlite").admin_key()
        admin = client.get("/admin", headers={"X-Admin-Key": admin_key})
        assert admin.status_code == 200
        for page in (thanks, admin):
            assert "<script>alert" not in page.text and "<img src=x" not in page.text
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
    assert _db(small_study, "SELECT comment FROM participants") == [(payload,)]


def test_invalid_demographic_answer_is_refused(server, small_study):
    with _client(server) as client:
        path = client.post("/start").headers["location"]
        assert "Prefer not to say" in client.get(path).text
        r = client.post(f"{path}/demographics", data={"gender": "<b>robot</b>", "age": "25-34"})
        assert r.status_code == 422 and "&lt;b&gt;robot&lt;/b&gt;" in r.text and "<b>robot" not in r.text
        assert _db(small_study, "SELECT demographics_done, gender, age FROM participants") == [(0, None, None)]
        assert client.post(f"{path}/demographics", data={"age": "Prefer not to say"}).status_code == 303
        assert client.post(f"{path}/demographics", data={"age": "18-24"}).status_code == 409
    assert _db(small_study, "SELECT demographics_done, gender, age FROM participants") == [(1, None, "Prefer not to say")]


def test_pages_and_urls_do_not_reveal_the_source(server, small_study):
    study = Study.load(small_study)
    secrets_ = {i.stem for i in study.items} | {"victim", "surrogate", "F_V", "F_A"}
    with _client(server) as client:
        path = _start(client)
        html = client.get(path).text
        for word in secrets_:
            assert word not in html
        images = re.findall(r'src="/img/([0-9a-f]+)"', html)
        assert len(images) == 2
        r = client.get(f"/img/{images[1]}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        for leak in ("/study.json", "/study.sqlite", "/img/..%2Fstudy.json", "/images/" + images[0] + ".png", "/static/../study.json"):
            assert client.get(leak).status_code == 404


def test_two_concurrent_answers_for_one_item_store_exactly_one(server, small_study):
    with _client(server) as client:
        path = _start(client)
        item, _ = _current(client, path)
    codes = []

    def post(rating: str) -> None:
        with _client(server) as c:
            codes.append(c.post(f"{path}/rate", data={"item": item, "rating": rating}).status_code)

    threads = [threading.Thread(target=post, args=(str(r),)) for r in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [303, 409, 409, 409]
    assert len(_db(small_study, "SELECT * FROM ratings")) == 1


def test_admin_csv_download_matches_export(server, small_study, tmp_path):
    from imgsteal.study.export import export_ratings

    with _client(server) as client:
        path = _start(client, {"education": "Doctorate"})
        item, _ = _current(client, path)
        client.post(f"{path}/rate", data={"item": item, "rating": "5"})
        key = StudyStore(small_study / "study.sqlite").admin_key()
        downloaded = client.get("/admin/ratings.csv", headers={"X-Admin-Key": key})
    assert downloaded.status_code == 200 and downloaded.headers["content-type"].startswith("text/csv")
    export_ratings(small_study, tmp_path / "r.csv")
    assert downloaded.text == (tmp_path / "r.csv").read_text()
    assert ",Doctorate,0," in downloaded.text


def test_study_without_demographics_goes_straight_to_the_pairs(tmp_path, task_dirs, serve_folder):
    from imgsteal.study.create import StudySpec, create_study

    out = tmp_path / "plain"
    create_study(StudySpec(tasks=task_dirs[:1], pairs=2, ask_demographics=False), out)
    with serve_folder(out) as url, _client(url) as client:
        assert "three optional questions" not in client.get("/").text
        path = client.post("/start").headers["location"]
        assert _current(client, path)[1] == "1 / 2"
        r = client.post(f"{path}/demographics", data={"gender": "Male"})
        assert r.status_code == 422 and _message(r) == "This study does not ask for background information."
        r = client.post("/p/unknown-token/rate", data={})
        assert r.status_code == 404 and "Back to the questionnaire" not in r.text
