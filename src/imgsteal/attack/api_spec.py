"""Any HTTP image API as the oracle, described by a spec file (YAML) instead of code.

A spec says how to send one image (multipart with a named file field, the raw bytes as the body, or
JSON with the image base64-encoded at a path, plus fixed extra fields), where the answer is (the
body's image bytes, base64 at a JSON path, or a URL at a JSON path to fetch the image from), how to
authenticate (a header whose value is read from an environment variable: never from the spec file,
and never stored, logged or shown), the price, and the rate-limit behaviour. See docs/api-spec.md.

    spec = load_api_spec("configs/api-specs/json-base64.yaml")
    with SpecOracle("https://api.example.com", spec, concurrency=4) as oracle:
        harvest(oracle, paths, store, cost=spec.price.cost)

Sending, retries (time-outs, 5xx with backoff), 429 + Retry-After pauses and lazy streaming are
`HttpOracleBase`'s, shared with imgsteal's own `HttpOracle`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Hashable, Literal, Mapping, Union

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from imgsteal.attack.http_oracle import HttpOracleBase, HttpOracleError, RetryPolicy, check_api_key, media_type_of
from imgsteal.attack.oracle import OracleAnswer
from imgsteal.errors import ImgstealError

PathToken = Union[str, int]
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})
# Answers with no successful parse yet: after this many that do not match the spec, the spec (not the
# images) is taken to be wrong and the harvest stops instead of paying for more.
MISMATCHES_BEFORE_STOP = 3
MAX_REDIRECTS = 5  # hops followed when fetching a json_url answer


class ApiSpecError(ImgstealError):
    """A spec file is missing, not YAML, or has an invalid field (the message names it)."""


def parse_json_path(path: str) -> list[PathToken]:
    """`a.b[0].c` or `a.b.0.c` -> ['a', 'b', 0, 'c']; raises ValueError on an empty or malformed path."""
    if not path or not path.strip():
        raise ValueError("an empty JSON path")
    tokens: list[PathToken] = []
    for part in path.split("."):
        match = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", part)
        if not match or (not match.group(1) and not match.group(2)):
            raise ValueError(f"malformed JSON path {path!r} (write it as a.b[0].c)")
        name, indexes = match.groups()
        if name:
            tokens.append(int(name) if name.isdigit() else name)
        tokens.extend(int(i) for i in re.findall(r"\[(\d+)\]", indexes))
    return tokens


def _checked_json_path(path: str) -> str:
    parse_json_path(path)
    return path


JsonPath = Annotated[str, AfterValidator(_checked_json_path)]  # a string that parse_json_path accepts


def get_at(document: Any, path: list[PathToken]) -> Any:
    """The value at `path` in a parsed JSON document; KeyError says where the path stopped matching."""
    node = document
    for depth, token in enumerate(path):
        where = _format_path(path[:depth]) or "the top level"
        if isinstance(token, int) and isinstance(node, list):
            if token >= len(node):
                raise KeyError(f"{where} is a list of {len(node)}, no index {token}")
            node = node[token]
        elif isinstance(node, dict) and str(token) in node:
            node = node[str(token)]
        elif isinstance(node, dict):
            keys = ", ".join(sorted(map(str, node))[:10]) or "no keys"
            raise KeyError(f"{where} has no {str(token)!r} (it has {keys})")
        else:
            raise KeyError(f"{where} is a {type(node).__name__}, not an object or list")
    return node


def _format_path(path: list[PathToken]) -> str:
    out = ""
    for token in path:
        out += f"[{token}]" if isinstance(token, int) else (f".{token}" if out else token)
    return out


def _set_at(document: dict, path: list[PathToken], value: Any) -> None:
    """Put `value` at `path`, creating objects and lists on the way (list indexes fill in order from 0).
    Raises ValueError where the path runs into a value that is already there."""
    node: Any = document
    for depth, token in enumerate(path):
        last = depth == len(path) - 1
        fresh = value if last else ([] if isinstance(path[depth + 1], int) else {})
        if isinstance(token, int):
            if not isinstance(node, list) or token > len(node):
                raise ValueError(f"index {token} cannot be set at {_format_path(path[:depth]) or 'the top level'}"
                                 " (lists are filled in order from 0)")
            if token == len(node):
                node.append(fresh)
        elif not isinstance(node, dict):
            raise ValueError(f"{_format_path(path[:depth])} is a {type(node).__name__}, not an object")
        elif token not in node:
            node[token] = fresh
        if last:
            clash = node[token] is not value
        else:
            clash = not isinstance(node[token], (dict, list))
        if clash:
            raise ValueError(f"fields already hold a value at {_format_path(path[:depth + 1])}")
        node = node[token]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RequestBase(_Strict):
    method: Literal["POST", "PUT"] = "POST"
    path: str = ""  # appended to the --oracle URL ("" = the URL itself is the endpoint)
    query: dict[str, str] = {}  # URL query parameters, fixed
    headers: dict[str, str] = {}  # extra fixed headers; never secrets (those go in auth)

    @field_validator("headers")
    @classmethod
    def _no_secrets(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if name.lower() in SECRET_HEADERS:
                raise ValueError(f"{name!r} looks like a credential: name the environment variable that holds it in auth.env"
                                 " instead (a spec file never holds secrets)")
        return headers


class MultipartRequest(_RequestBase):
    """multipart/form-data: the image in file field `field`, plus `fields` as form fields."""

    type: Literal["multipart"]
    field: str = Field("image", min_length=1)
    filename: str = "image.png"
    fields: dict[str, Union[str, int, float, bool]] = {}


class RawRequest(_RequestBase):
    """The image bytes as the body; Content-Type from the bytes (`auto`) or fixed."""

    type: Literal["raw"]
    content_type: str = "auto"


class JsonRequest(_RequestBase):
    """A JSON body: `fields` with the image base64-encoded (or as a data: URL) at `image_path`."""

    type: Literal["json"]
    image_path: JsonPath
    encoding: Literal["base64", "data_url"] = "base64"
    fields: dict[str, Any] = {}

    @model_validator(mode="after")
    def _fits_fields(self) -> "JsonRequest":
        self.template()  # the image must have a place among the extra fields
        return self

    def template(self) -> tuple[bytes, bytes]:
        """(prefix, suffix): the body is prefix + encoded image + suffix (serialised once, not per query)."""
        marker = f"imgsteal-image-{uuid.uuid4().hex}"
        try:
            document = json.loads(json.dumps(self.fields))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"fields cannot be written as JSON: {exc}") from None
        try:
            _set_at(document, parse_json_path(self.image_path), marker)
        except ValueError as exc:
            raise ValueError(f"image_path {self.image_path!r} does not fit the fields: {exc}") from None
        text = json.dumps(document, separators=(",", ":")).encode()
        prefix, suffix = text.split(marker.encode())
        return prefix, suffix


class ImageResponse(_Strict):
    """The body is the image (PNG, JPEG, WebP, ...)."""

    type: Literal["image"]


class JsonBase64Response(_Strict):
    """A JSON body with the image base64-encoded (or a data: URL) at `image_path`."""

    type: Literal["json_base64"]
    image_path: JsonPath


class JsonUrlResponse(_Strict):
    """A JSON body with a URL at `url_path`; the image is fetched from it with GET (relative URLs
    resolve against the API). The key is sent with the fetch only to the API's own origin."""

    type: Literal["json_url"]
    url_path: JsonPath


class AuthSpec(_Strict):
    """The key is read from environment variable `env` and sent as header `header: format`."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    header: str = Field("Authorization", pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    format: str = "Bearer {key}"

    @field_validator("format")
    @classmethod
    def _one_key(cls, value: str) -> str:
        if value.count("{key}") != 1:
            raise ValueError("must contain {key} exactly once, e.g. 'Bearer {key}' or '{key}'")
        return value


class PriceSpec(_Strict):
    """What one answered query costs: `usd` per query, per 256 x 256 answer pixels, or per megapixel."""

    usd: float = Field(ge=0)
    per: Literal["query", "256x256", "megapixel"] = "query"

    def cost(self, width: int, height: int) -> float:
        """USD of one answer of width x height pixels."""
        if self.per == "query":
            return self.usd
        return self.usd * width * height / (256 * 256 if self.per == "256x256" else 1_000_000)


def _error_statuses(statuses: list[int]) -> list[int]:
    for status in statuses:
        if not 400 <= status <= 599:
            raise ValueError(f"{status} is not an error status (400-599)")
        if status in (401, 403):
            raise ValueError("401 and 403 mean a refused key: they stop the harvest and are never retried")
    return statuses


class RateLimitSpec(_Strict):
    """How the API says "slow down", and how fast the client may go."""

    status: list[int] = [429]  # pause every request for Retry-After (or a backoff) on these
    retry_after_header: str = "Retry-After"  # seconds
    max_requests_per_s: float | None = Field(None, gt=0)  # pace sends under the API's published limit
    max_rate_limited: int = Field(1000, ge=0)  # per request, then that query fails

    _status = field_validator("status")(_error_statuses)


class RetrySpec(_Strict):
    """Time-outs, connection errors and `transient_status` are retried with full-jitter backoff."""

    max_attempts: int = Field(6, ge=1, le=100)
    backoff_base_s: float = Field(0.25, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    transient_status: list[int] = [408, 500, 502, 503, 504]

    _status = field_validator("transient_status")(_error_statuses)


Request = Annotated[Union[MultipartRequest, RawRequest, JsonRequest], Field(discriminator="type")]
Response = Annotated[Union[ImageResponse, JsonBase64Response, JsonUrlResponse], Field(discriminator="type")]


class ApiSpec(_Strict):
    """A third-party image API: request, response, auth, price, rate limit. Holds no secret."""

    name: str = ""
    request: Request
    response: Response
    auth: AuthSpec | None = None  # None: no key
    price: PriceSpec
    rate_limit: RateLimitSpec = RateLimitSpec()
    retry: RetrySpec = Field(default_factory=RetrySpec, validate_default=True)
    timeout_s: float = Field(120.0, gt=0)  # per request (read), seconds
    concurrency: int = Field(4, ge=1, le=256)  # default requests in flight (the CLI's --concurrency wins)

    @field_validator("retry")
    @classmethod
    def _statuses_differ(cls, retry: RetrySpec, info: ValidationInfo) -> RetrySpec:
        rate_limit = info.data.get("rate_limit")
        overlap = set(retry.transient_status) & set(rate_limit.status if rate_limit else ())
        if overlap:
            raise ValueError(f"transient_status and rate_limit.status both hold {sorted(overlap)}; a status is one or the other")
        return retry


def load_api_spec(path: str | Path) -> ApiSpec:
    """Read and validate a spec file; raises ApiSpecError naming each invalid field (e.g. `request.json.image_path`)."""
    from imgsteal.config import load_yaml_config

    return load_yaml_config(path, ApiSpec, "API spec", ApiSpecError)


class _HeaderAuth(httpx.Auth):
    """Adds the key header to requests for the API's origin only (not to third-party image URLs)."""

    def __init__(self, header: str, value: SecretStr, origin: tuple[str, str, int]) -> None:
        self._header, self._value, self._origin = header, value, origin

    def auth_flow(self, request: httpx.Request):
        if _origin(request.url) == self._origin:
            request.headers[self._header] = self._value.get_secret_value()
        else:
            request.headers.pop(self._header, None)
        yield request

    def __repr__(self) -> str:
        return f"<header auth {self._header}: ***>"


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _is_image(data: bytes) -> bool:
    return (data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF8", b"II*\x00", b"MM\x00*"))
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


class AnswerMismatch(Exception):
    """A 2xx answer that does not hold an image where the spec says."""


class SpecOracle(HttpOracleBase):
    """Oracle over the API at `url` described by `spec` (an ApiSpec, or a path to its YAML file).

    api_key: the key, overriding the environment variable the spec's `auth.env` names (read once,
    here; kept only inside the HTTP client's auth hook, never in reprs, errors or files);
    environ: where to read `auth.env` (default os.environ); concurrency: requests in flight
    (default the spec's); transport: an httpx async transport (tests).
    """

    def __init__(
        self,
        url: str,
        spec: ApiSpec | str | Path,
        concurrency: int | None = None,
        *,
        api_key: str | None = None,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(spec, ApiSpec):
            spec = load_api_spec(spec)
        if not url.startswith(("http://", "https://")):
            raise HttpOracleError(f"the oracle URL must start with http:// or https://, got {url!r}")
        self.spec = spec
        request = spec.request
        endpoint = url if not request.path else url.rstrip("/") + "/" + request.path.lstrip("/")
        self.endpoint = endpoint
        self._origin = _origin(httpx.URL(endpoint))
        self._secrets: tuple[SecretStr, ...] = ()  # SecretStr: shown as '**********' wherever printed
        auth = None
        if spec.auth is not None:
            key = api_key if api_key is not None else (os.environ if environ is None else environ).get(spec.auth.env)
            if not key:
                raise HttpOracleError(f"the API key is read from ${spec.auth.env} (the spec's auth.env), which is not set"
                                      f" or empty: export {spec.auth.env}=... or pass a key file")
            key = check_api_key(key, "the key given" if api_key is not None else f"the key in ${spec.auth.env}")
            value = SecretStr(spec.auth.format.replace("{key}", key))
            self._secrets = (SecretStr(key), value)
            auth = _HeaderAuth(spec.auth.header, value, self._origin)
        retry = RetryPolicy(max_attempts=spec.retry.max_attempts, backoff_base_s=spec.retry.backoff_base_s,
                            backoff_max_s=spec.retry.backoff_max_s, max_rate_limited=spec.rate_limit.max_rate_limited)
        super().__init__(
            endpoint, concurrency or spec.concurrency, timeout_s=spec.timeout_s, retry=retry, transport=transport,
            client_options={"auth": auth, "headers": {"User-Agent": "imgsteal-harvest", **request.headers}},
            requests_per_s=spec.rate_limit.max_requests_per_s, rate_limit_status=spec.rate_limit.status,
            transient_status=spec.retry.transient_status, retry_after_header=spec.rate_limit.retry_after_header,
        )
        if isinstance(request, JsonRequest):
            self._template = request.template()
        response = spec.response
        self._response_path = (parse_json_path(response.image_path) if isinstance(response, JsonBase64Response)
                               else parse_json_path(response.url_path) if isinstance(response, JsonUrlResponse) else [])
        self._matched = False  # some answer has matched the response spec
        self._mismatches = 0

    def __repr__(self) -> str:
        auth = f", auth=${self.spec.auth.env}" if self.spec.auth else ""
        return f"SpecOracle({self.endpoint!r}, {self.spec.name or self.spec.request.type!r}, concurrency={self.concurrency}{auth})"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret.get_secret_value(), "***")
        return text

    def _error_text(self, response: httpx.Response) -> str:
        return self._redact(super()._error_text(response))

    def _refuse_key(self, response: httpx.Response) -> None:
        # Only the API's own origin judges the key; a 401/403 from another host (an expired storage
        # link) fails that query, not the harvest.
        if response.status_code in (401, 403) and _origin(response.request.url) == self._origin:
            where = f"${self.spec.auth.env}" if self.spec.auth else "none: the spec has no auth section"
            raise HttpOracleError(f"{self.endpoint} refused the request as unauthorised ({self._error_text(response)});"
                                  f" the key comes from {where}")

    # -- one query ------------------------------------------------------------------------------
    def _send(self, data: bytes):
        request = self.spec.request
        options: dict[str, Any] = {"params": request.query or None}
        if isinstance(request, MultipartRequest):
            options["files"] = {request.field: (request.filename, data, media_type_of(data))}
            options["data"] = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in request.fields.items()}
        elif isinstance(request, RawRequest):
            kind = media_type_of(data) if request.content_type == "auto" else request.content_type
            options["content"] = data
            options["headers"] = {"Content-Type": kind}
        else:
            encoded = base64.b64encode(data)
            if request.encoding == "data_url":
                encoded = f"data:{media_type_of(data)};base64,".encode() + encoded
            prefix, suffix = self._template
            options["content"] = prefix + encoded + suffix
            options["headers"] = {"Content-Type": "application/json"}
        return lambda: self._client.request(request.method, self.endpoint, **options)

    async def _fetch(self, url: httpx.URL) -> httpx.Response:
        """GET `url`, following redirects here, one request per hop, so the auth hook decides per hop
        whether the key goes with it (httpx's own redirects would carry a custom key header along)."""
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._client.get(url)
            location = response.headers.get("location")
            if not (response.is_redirect and location):
                break
            url = response.url.join(location)
            if url.scheme not in ("http", "https"):
                break
        return response  # a 3xx left after MAX_REDIRECTS hops fails the query like any other refusal

    def _extract(self, response: httpx.Response) -> bytes | httpx.URL:
        """The image bytes, or the URL to fetch them from; AnswerMismatch when the answer does not fit the spec."""
        kind = self.spec.response
        if isinstance(kind, ImageResponse):
            if not _is_image(response.content):
                raise AnswerMismatch(f"response.type is image but the answer is not an image"
                                     f" (Content-Type {response.headers.get('content-type', 'none')!r})")
            return response.content
        try:
            document = response.json()
        except ValueError:
            raise AnswerMismatch(f"response.type is {kind.type} but the answer is not JSON"
                                 f" (Content-Type {response.headers.get('content-type', 'none')!r})") from None
        field = "response.image_path" if isinstance(kind, JsonBase64Response) else "response.url_path"
        try:
            value = get_at(document, self._response_path)
        except KeyError as exc:
            raise AnswerMismatch(f"{field}: {exc.args[0]}") from None
        if not isinstance(value, str):
            raise AnswerMismatch(f"{field}: a {type(value).__name__}, not a string")
        if isinstance(kind, JsonUrlResponse):
            try:
                target = response.url.join(value)
            except httpx.InvalidURL:
                raise AnswerMismatch(f"{field}: not a URL") from None
            if target.scheme not in ("http", "https"):
                raise AnswerMismatch(f"{field}: a {target.scheme or 'schemeless'} URL; only http(s) images are fetched")
            return target
        if value.startswith("data:"):
            value = value.partition(",")[2]
        if "\n" in value or "\r" in value:  # MIME-style line-wrapped base64
            value = "".join(value.split())
        try:
            image = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise AnswerMismatch(f"{field}: not valid base64") from None
        if not _is_image(image):
            raise AnswerMismatch(f"{field}: the decoded bytes are not an image")
        return image

    async def _query(self, key: Hashable, data: bytes) -> OracleAnswer:
        started = time.perf_counter()
        done = await self._exchange(self._send(data))
        if done.response is None:
            return OracleAnswer(key=key, image=None, error=done.error)
        try:
            found = self._extract(done.response)
            if isinstance(found, httpx.URL):
                fetched = await self._exchange(lambda: self._fetch(found))
                if fetched.response is None:
                    return OracleAnswer(key=key, image=None, error=f"fetching the answer's image: {fetched.error}")
                if not _is_image(fetched.response.content):
                    raise AnswerMismatch("the URL at response.url_path did not give an image"
                                         f" (Content-Type {fetched.response.headers.get('content-type', 'none')!r})")
                found = fetched.response.content
        except AnswerMismatch as exc:
            return self._mismatch(key, self._redact(str(exc)))
        self._matched = True
        self.stats.answered += 1
        return OracleAnswer(key=key, image=found, latency_s=time.perf_counter() - started)

    def _mismatch(self, key: Hashable, problem: str) -> OracleAnswer:
        self.stats.refused += 1
        self._mismatches += 1
        if not self._matched and self._mismatches >= MISMATCHES_BEFORE_STOP:
            raise HttpOracleError(f"{self.endpoint}: the first {self._mismatches} answers do not match the spec's"
                                  f" response section; stopping before paying for more. Last: {problem}")
        return OracleAnswer(key=key, image=None, error=f"answer does not match the spec: {problem}")
