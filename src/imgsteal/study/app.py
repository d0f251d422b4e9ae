"""The questionnaire as a small web app: server-rendered HTML and plain forms, so it works without JS.

Flow: `/` introduction -> POST `/start` (new participant, random token, seeded shuffled order) ->
`/p/<token>`, which always shows the participant's next step: optional demographics, then the
first unrated pair, then the thank-you page. The link is the participant's way back in.

Safety: every template is autoescaped; a strict Content-Security-Policy allows only this server's
own stylesheet, script and images; images are served by opaque id only, so neither URLs nor file
names tell F_V's outputs from F_A's. Image responses carry a content-hash ETag and no
Last-Modified, so no header depends on when (in which order) a file was written.

The researcher's pages (`/admin`, `/admin/ratings.csv`) take the admin key from the
`imgsteal_admin` cookie (set by signing in on `/admin`) or an `X-Admin-Key` header, never from
the URL, so the key does not end up in access logs, browser history or Referer headers.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from imgsteal.errors import ImgstealError
from imgsteal.study.export import ratings_csv, rating_records
from imgsteal.study.model import DB_FILE, DEMOGRAPHIC_FIELDS, IMAGE_DIR, Study, participant_order
from imgsteal.study.store import (
    MAX_COMMENT_CHARS,
    Participant,
    StudyConflict,
    StudyInputError,
    StudyStore,
    UnknownParticipant,
)

COOKIE = "imgsteal_participant"
ADMIN_COOKIE = "imgsteal_admin"
ADMIN_HEADER = "x-admin-key"
_STATIC_DIR = Path(__file__).parent / "static"
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # The participant token is in the URL; never leak it through a Referer header.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
DEMOGRAPHIC_LABELS = {"gender": "Gender", "age": "Age", "education": "Highest completed education"}


def _template_env() -> Environment:
    # autoescape=True for every template, whatever its name: participant text is never trusted.
    env = Environment(loader=PackageLoader("imgsteal.study", "templates"), autoescape=True, undefined=StrictUndefined)
    env.filters["paragraphs"] = lambda text: [p.strip() for p in str(text).split("\n\n") if p.strip()]
    env.filters["sentence"] = lambda text: (str(text)[:1].upper() + str(text)[1:]).rstrip(".") + "."
    env.filters["short_time"] = lambda iso: str(iso)[:16].replace("T", " ") if iso else "–"
    return env


def _one_field(form: FormData, name: str, *, required: bool, missing_message: str = "") -> str | None:
    """The single value of a form field; refuses duplicates, and missing values when required."""
    values = form.getlist(name)
    if len(values) > 1:
        raise StudyInputError(f"the field {name!r} was sent more than once")
    value = values[0] if values else None
    if value is not None and not isinstance(value, str):
        raise StudyInputError(f"the field {name!r} must be text, not a file upload")
    if required and (value is None or value.strip() == ""):
        raise StudyInputError(missing_message or f"missing field {name!r}")
    return value


def create_app(study_dir: str | Path) -> FastAPI:
    """The questionnaire app for one study folder (study.json, images/, study.sqlite)."""
    study_dir = Path(study_dir)
    study = Study.load(study_dir)
    store = StudyStore(study_dir / DB_FILE)
    image_dir = study_dir / IMAGE_DIR
    missing = [i for i in sorted(study.image_ids()) if not (image_dir / f"{i}.png").is_file()]
    if missing:
        raise ImgstealError(f"{study_dir}: {len(missing)} image(s) of the study are missing from {image_dir}")
    items = study.item_map()
    image_ids = study.image_ids()
    env = _template_env()

    app = FastAPI(title=study.title, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=_STATIC_DIR), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["Cache-Control"] = "no-store"
        return response

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
        html = env.get_template(template).render(study=study, base=base(request), **context)
        return HTMLResponse(html, status_code=status_code)

    def personal_link(request: Request, participant: Participant) -> str:
        return f"{str(request.base_url).rstrip('/')}/p/{participant.token}"

    def error_page(request: Request, exc: ImgstealError, token: str | None = None) -> HTMLResponse:
        status = getattr(exc, "status_code", 400)
        titles = {404: "Link not found", 409: "Already recorded", 422: "Answer not accepted"}
        return render(
            request,
            "error.html",
            status_code=status,
            title=titles.get(status, "Request refused"),
            message=str(exc),
            continue_url=f"{base(request)}/p/{token}" if token and status != 404 else None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        not_found = exc.status_code == 404
        message = "This page does not exist." if not_found else str(exc.detail)
        title = "Not found" if not_found else "Request refused"
        return render(request, "error.html", status_code=exc.status_code, title=title, message=message, continue_url=None)

    # -- participant pages ------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def intro(request: Request) -> HTMLResponse:
        existing = None
        token = request.cookies.get(COOKIE)
        if token:
            try:
                existing = store.participant(token)
            except UnknownParticipant:
                existing = None
        return render(request, "intro.html", existing=existing, n_items=len(study.items))

    @app.post("/start")
    def start(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if token:
            try:
                participant = store.participant(token)
                return RedirectResponse(f"{base(request)}/p/{participant.token}", status_code=303)
            except UnknownParticipant:
                pass
        participant = store.new_participant(lambda seed: participant_order(study, seed))
        response = RedirectResponse(f"{base(request)}/p/{participant.token}", status_code=303)
        response.set_cookie(COOKIE, participant.token, httponly=True, samesite="lax", path=base(request) or "/", max_age=60 * 60 * 24 * 90)
        return response

    @app.get("/p/{token}", response_class=HTMLResponse)
    def participant_page(request: Request, token: str) -> HTMLResponse:
        try:
            participant = store.participant(token)
        except UnknownParticipant as exc:
            return error_page(request, exc)
        link = personal_link(request, participant)
        if participant.finished:
            return render(request, "thanks.html", participant=participant)
        answers = store.answers(participant.id)
        if study.ask_demographics and not participant.demographics_done and not answers:
            return render(
                request,
                "demographics.html",
                participant=participant,
                link=link,
                fields=[(f, DEMOGRAPHIC_LABELS[f], study.demographics.choices(f)) for f in DEMOGRAPHIC_FIELDS],
            )
        position = next(i for i, item_id in enumerate(participant.order) if item_id not in answers)
        item = items[participant.order[position]]
        total = len(participant.order)
        return render(
            request,
            "item.html",
            participant=participant,
            link=link,
            item=item,
            task=study.task(item.task),
            position=position + 1,
            answered=len(answers),
            total=total,
            is_last=len(answers) == total - 1,
            max_comment=MAX_COMMENT_CHARS,
        )

    @app.post("/p/{token}/demographics")
    async def demographics(request: Request, token: str) -> Response:
        try:
            store.participant(token)  # an unknown link is a 404 before any form checks
            if not study.ask_demographics:
                raise StudyInputError("this study does not ask for background information")
            form = await request.form()
            skip = _one_field(form, "skip", required=False)
            values: dict[str, str | None] = {}
            for field in DEMOGRAPHIC_FIELDS:
                value = _one_field(form, field, required=False)
                value = value.strip() if value else None
                if value is not None and value not in study.demographics.choices(field):
                    raise StudyInputError(f"{DEMOGRAPHIC_LABELS[field]}: {value!r} is not one of the offered answers")
                values[field] = None if skip else value
            store.save_demographics(token, values)
        except (StudyInputError, StudyConflict, UnknownParticipant) as exc:
            return error_page(request, exc, token)
        return RedirectResponse(f"{base(request)}/p/{token}", status_code=303)

    @app.post("/p/{token}/rate")
    async def rate(request: Request, token: str) -> Response:
        try:
            store.participant(token)  # an unknown link is a 404 before any form checks
            form = await request.form()
            item_id = _one_field(form, "item", required=True, missing_message="missing field 'item': the form did not say which image pair was rated")
            rating = _one_field(form, "rating", required=True, missing_message="missing field 'rating': please choose a rating from 1 to 5")
            comment = _one_field(form, "comment", required=False)
            comment = comment.strip() if comment else None
            store.record_rating(token, item_id.strip(), rating, comment or None)
        except (StudyInputError, StudyConflict, UnknownParticipant) as exc:
            return error_page(request, exc, token)
        return RedirectResponse(f"{base(request)}/p/{token}", status_code=303)

    @app.get("/favicon.ico")
    def favicon(request: Request) -> Response:
        return RedirectResponse(f"{base(request)}/static/favicon.svg", status_code=301)

    # Content-hash ETags, computed once: the same bytes give the same headers, whatever wrote them when.
    etags = {i: '"' + hashlib.sha256((image_dir / f"{i}.png").read_bytes()).hexdigest()[:32] + '"' for i in image_ids}

    @app.get("/img/{image_id}")
    def image(request: Request, image_id: str) -> Response:
        # Membership in the study's id set is the whole check: no path is built from unknown input.
        if image_id not in image_ids:
            raise StarletteHTTPException(status_code=404)
        headers = {"ETag": etags[image_id], "Cache-Control": "private, max-age=3600"}
        if etags[image_id] in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        return Response((image_dir / f"{image_id}.png").read_bytes(), media_type="image/png", headers=headers)

    # -- researcher pages -------------------------------------------------------------------------

    def is_admin(request: Request) -> bool:
        given = request.headers.get(ADMIN_HEADER) or request.cookies.get(ADMIN_COOKIE) or ""
        return secrets.compare_digest(given.encode(), store.admin_key().encode())

    def admin_path(request: Request) -> str:
        return f"{base(request)}/admin"

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request) -> HTMLResponse:
        if not is_admin(request):
            return render(request, "admin_login.html", status_code=401, failed=False)
        participants = store.participants()
        records = rating_records(study_dir)
        summary = []
        for task in study.tasks:
            row = {"task": task.name}
            for source in ("victim", "surrogate"):
                values = [r["rating"] for r in records if r["task"] == task.name and r["source"] == source]
                row[source] = (len(values), sum(values) / len(values) if values else None)
            summary.append(row)
        demographics = {
            field: Counter(getattr(p, field) or "(not given)" for p in participants) for field in DEMOGRAPHIC_FIELDS
        }
        return render(
            request,
            "admin.html",
            participants=participants,
            n_finished=sum(p.finished for p in participants),
            summary=summary,
            demographics=[(DEMOGRAPHIC_LABELS[f], demographics[f].most_common()) for f in DEMOGRAPHIC_FIELDS],
            comments=[(p.code, p.comment) for p in participants if p.comment],
        )

    @app.post("/admin/login")
    async def admin_login(request: Request) -> Response:
        form = await request.form()
        key = form.get("key")
        if not isinstance(key, str) or not secrets.compare_digest(key.strip().encode(), store.admin_key().encode()):
            return render(request, "admin_login.html", status_code=403, failed=True)
        response = RedirectResponse(admin_path(request), status_code=303)
        response.set_cookie(ADMIN_COOKIE, key.strip(), httponly=True, samesite="strict", path=admin_path(request),
                            max_age=60 * 60 * 12, secure=request.url.scheme == "https")
        return response

    @app.post("/admin/logout")
    def admin_logout(request: Request) -> Response:
        response = RedirectResponse(admin_path(request), status_code=303)
        response.delete_cookie(ADMIN_COOKIE, path=admin_path(request))
        return response

    @app.get("/admin/ratings.csv")
    def admin_csv(request: Request) -> Response:
        if not is_admin(request):
            raise StarletteHTTPException(status_code=404)
        return Response(
            ratings_csv(rating_records(study_dir)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="ratings.csv"', "Cache-Control": "no-store"},
        )

    return app
