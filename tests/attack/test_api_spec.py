"""Any HTTP image API as the oracle: small third-party services (plain http.server on 127.0.0.1,
written here, not imgsteal's server) in each style, harvested into a PairStore through SpecOracle;
and specs with mistakes, refused with the field named."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from imgsteal.attack.api_spec import ApiSpec, ApiSpecError, SpecOracle, load_api_spec, parse_json_path
from imgsteal.attack.harvest import harvest
from imgsteal.attack.http_oracle import HttpOracleError
from imgsteal.data.pairs import PairStore

KEY = "sk-test-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]
FAST_RETRY = {"max_attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05}


def invert_png(data: bytes) -> bytes:
    """The mock model: the colour negative of the image, as PNG."""
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(255 - image).save(out, format="PNG")
    return out.getvalue()


class MockApi:
    """A third-party API on 127.0.0.1: `route(handler) -> (status, headers, body)` per request.

    handler.body holds the request body; `requests` logs (method, path, headers) of every request.
    """

    def __init__(self, route: Callable) -> None:
        self.route = route
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length)
                with api.lock:
                    api.requests.append((self.command, self.path, dict(self.headers)))
                status, headers, body = api.route(self)
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                    headers = {"Content-Type": "application/json", **headers}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "MockApi":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def unauthorised(handler, header: str = "Authorization", value: str = f"Bearer {KEY}"):
    if handler.headers.get(header) != value:
        # Echo what was sent, as careless APIs do: the oracle must not repeat it.
        return 401, {}, {"error": {"message": f"bad key {handler.headers.get(header)!r}"}}
    return None


def multipart_image(handler) -> tuple[bytes, dict[str, str]]:
    raw = b"Content-Type: " + handler.headers["Content-Type"].encode() + b"\r\n\r\n" + handler.body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    files, fields = {}, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            files[name] = part.get_payload(decode=True)
        else:
            fields[name] = part.get_payload(decode=True).decode()
    return files["file"], fields


def write_inputs(folder: Path, count: int, size: int = 12) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for i in range(count):
        path = folder / f"x{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def spec_of(**fields) -> ApiSpec:
    return ApiSpec.model_validate({"price": {"usd": 0.002}, "retry": FAST_RETRY, **fields})


def harvest_all(url: str, spec: ApiSpec, inputs: list[Path], store_dir: Path, **oracle_kwargs):
    with SpecOracle(url, spec, concurrency=3, environ={"MOCK_API_KEY": KEY}, **oracle_kwargs) as oracle, \
            PairStore(store_dir) as store:
        report = harvest(oracle, inputs, store, progress=False, cost=spec.price.cost)
        pairs = [store.load_pair(r) for r in store.records()]
        return report, oracle, pairs


def assert_inverted(pairs, count: int) -> None:
    assert len(pairs) == count
    for x, y in pairs:
        assert x.shape == y.shape
        assert float((x + y - 1).abs().max()) < 1e-6  # the mock's negative of exactly what was sent


def assert_key_not_on_disk(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


# -- each style, harvested ------------------------------------------------------------------------

def test_multipart_with_extra_fields_and_a_key_header(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore at their most talkative: still no key
    seen_fields = []

    def route(h):
        if (refused := unauthorised(h, "X-Api-Key", KEY)):
            return refused
        if urlsplit(h.path).path != "/v2/enhance" or h.command != "POST":
            return 404, {}, {"error": "no such route"}
        image, fields = multipart_image(h)
        seen_fields.append(fields)
        return 200, {"Content-Type": "image/png"}, invert_png(image)

    spec = spec_of(request={"type": "multipart", "path": "/v2/enhance", "field": "file",
                            "fields": {"mode": "negative", "scale": 1, "fast": True}},
                   response={"type": "image"}, auth={"env": "MOCK_API_KEY", "header": "X-Api-Key", "format": "{key}"})
    inputs = write_inputs(tmp_path / "in", 5)
    with MockApi(route) as api:
        report, oracle, pairs = harvest_all(api.url, spec, inputs, tmp_path / "pairs")
    assert report.queried == 5 and report.failed == 0
    assert report.spent_usd == pytest.approx(5 * 0.002)  # flat price per query
    assert_inverted(pairs, 5)
    assert seen_fields == [{"mode": "negative", "scale": "1", "fast": "true"}] * 5
    assert_key_not_on_disk(tmp_path)
    assert "HTTP Request: POST" in caplog.text and KEY not in caplog.text


def test_raw_body_with_put_query_parameters_and_fixed_content_type(tmp_path):
    def route(h):
        if (refused := unauthorised(h, value=f"Token {KEY}")):
            return refused
        url = urlsplit(h.path)
        assert h.command == "PUT" and url.path == "/process" and parse_qs(url.query) == {"model": ["neg"]}
        assert h.headers["Content-Type"] == "application/octet-stream" and h.headers["X-Client"] == "audit"
        return 200, {"Content-Type": "image/png"}, invert_png(h.body)

    spec = spec_of(request={"type": "raw", "method": "PUT", "path": "process", "query": {"model": "neg"},
                            "content_type": "application/octet-stream", "headers": {"X-Client": "audit"}},
                   response={"type": "image"}, auth={"env": "MOCK_API_KEY", "format": "Token {key}"},
                   price={"usd": 0.01, "per": "megapixel"})
    inputs = write_inputs(tmp_path / "in", 4, size=10)
    with MockApi(route) as api:
        report, _, pairs = harvest_all(api.url, spec, inputs, tmp_path / "pairs")
    assert report.queried == 4 and report.failed == 0
    assert report.spent_usd == pytest.approx(4 * 0.01 * 100 / 1e6)
    assert_inverted(pairs, 4)


def test_json_base64_in_and_out_at_nested_paths(tmp_path):
    def route(h):
        if (refused := unauthorised(h)):
            return refused
        body = json.loads(h.body)
        assert h.headers["Content-Type"] == "application/json"
        assert body["parameters"] == {"scale": 1} and body["instances"][0]["prompt"] == "neg"
        image = base64.b64decode(body["instances"][0]["image"]["b64"], validate=True)
        wrapped = base64.encodebytes(invert_png(image)).decode()  # MIME line-wrapped, 76 characters a line
        return 200, {}, {"predictions": [{"id": 1, "output": wrapped}]}

    spec = spec_of(request={"type": "json", "path": "/v1/predict", "image_path": "instances[0].image.b64",
                            "fields": {"instances": [{"prompt": "neg"}], "parameters": {"scale": 1}}},
                   response={"type": "json_base64", "image_path": "predictions.0.output"},
                   auth={"env": "MOCK_API_KEY"}, price={"usd": 0.016, "per": "256x256"})
    inputs = write_inputs(tmp_path / "in", 6)
    with MockApi(route) as api:
        report, oracle, pairs = harvest_all(api.url, spec, inputs, tmp_path / "pairs")
    assert report.queried == 6 and oracle.stats.answered == 6
    assert report.spent_usd == pytest.approx(6 * 0.016 * 144 / 65536)
    assert_inverted(pairs, 6)


def test_json_data_url_in_and_image_url_out_fetched_with_the_key_only_from_the_api(tmp_path):
    files: dict[str, bytes] = {}
    lock = threading.Lock()

    def cdn_route(h):  # another origin (port): must never see the key
        assert "Authorization" not in h.headers
        return 200, {"Content-Type": "image/png"}, files[urlsplit(h.path).path]

    with MockApi(cdn_route) as cdn:
        def route(h):
            if (refused := unauthorised(h)):
                return refused
            if h.command == "GET":  # same origin as the API: the key is sent
                return 200, {"Content-Type": "image/png"}, files[urlsplit(h.path).path]
            data_url = json.loads(h.body)["input"]["image"]
            assert data_url.startswith("data:image/png;base64,")
            with lock:
                number = len(files)
                name = f"/out/{number}.png"
                files[name] = invert_png(base64.b64decode(data_url.partition(",")[2]))
            # Alternate a relative URL on the API and an absolute one on the "CDN".
            url = name if number % 2 else cdn.url + name
            return 200, {}, {"status": "succeeded", "output": {"url": url}}

        spec = spec_of(request={"type": "json", "image_path": "input.image", "encoding": "data_url"},
                       response={"type": "json_url", "url_path": "output.url"}, auth={"env": "MOCK_API_KEY"})
        inputs = write_inputs(tmp_path / "in", 6)
        with MockApi(route) as api:
            report, _, pairs = harvest_all(api.url + "/v1/jobs", spec, inputs, tmp_path / "pairs")
            api_gets = [r for r in api.requests if r[0] == "GET"]
    assert report.queried == 6 and report.failed == 0
    assert_inverted(pairs, 6)
    assert len(api_gets) == 3 and len(cdn.requests) == 3


def test_an_expired_image_link_on_another_host_fails_one_query_not_the_harvest(tmp_path):
    files: dict[str, bytes] = {}
    lock = threading.Lock()

    def cdn_route(h):
        if h.path == "/out/0.png":
            return 403, {}, {"error": "link expired"}
        return 200, {"Content-Type": "image/png"}, files[h.path]

    with MockApi(cdn_route) as cdn:
        def route(h):
            with lock:
                name = f"/out/{len(files)}.png"
                files[name] = invert_png(base64.b64decode(json.loads(h.body)["image"]))
            return 200, {}, {"url": cdn.url + name}

        spec = spec_of(request={"type": "json", "image_path": "image"}, response={"type": "json_url", "url_path": "url"},
                       auth={"env": "MOCK_API_KEY"})
        inputs = write_inputs(tmp_path / "in", 3)
        with MockApi(route) as api:
            report, oracle, pairs = harvest_all(api.url, spec, inputs, tmp_path / "pairs")
    assert report.queried == 2 and report.failed == 1
    assert oracle.stats.refused == 1
    assert_inverted(pairs, 2)


def test_a_redirect_to_another_host_does_not_carry_a_custom_key_header(tmp_path):
    files: dict[str, bytes] = {}
    lock = threading.Lock()

    def cdn_route(h):
        assert "X-Api-Key" not in h.headers, "the key followed a redirect to another host"
        return 200, {"Content-Type": "image/png"}, files[urlsplit(h.path).path]

    with MockApi(cdn_route) as cdn:
        def route(h):
            if (refused := unauthorised(h, "X-Api-Key", KEY)):
                return refused
            if h.command == "GET":  # /result/N on the API redirects to the CDN
                return 302, {"Location": f"{cdn.url}/out/{h.path.rsplit('/', 1)[1]}.png"}, b""
            with lock:
                number = len(files)
                files[f"/out/{number}.png"] = invert_png(base64.b64decode(json.loads(h.body)["image"]))
            return 200, {}, {"result": f"/result/{number}"}

        spec = spec_of(request={"type": "json", "image_path": "image"},
                       response={"type": "json_url", "url_path": "result"},
                       auth={"env": "MOCK_API_KEY", "header": "X-Api-Key", "format": "{key}"})
        inputs = write_inputs(tmp_path / "in", 4)
        with MockApi(route) as api:
            report, _, pairs = harvest_all(api.url, spec, inputs, tmp_path / "pairs")
    assert report.queried == 4 and report.failed == 0
    assert len(cdn.requests) == 4
    assert_inverted(pairs, 4)


def test_429_with_retry_after_pauses_every_request_and_costs_no_tries(tmp_path):
    state = {"limited": 0, "first_429": None, "after": []}
    lock = threading.Lock()

    def route(h):
        now = time.monotonic()
        with lock:
            if state["limited"] < 3:
                state["limited"] += 1
                state["first_429"] = state["first_429"] or now
                return 429, {"Retry-After": "0.4"}, {"error": "slow down"}
        state["after"].append(now)
        return 200, {"Content-Type": "image/png"}, invert_png(h.body)

    spec = spec_of(request={"type": "raw"}, response={"type": "image"},
                   retry={"max_attempts": 1, "backoff_base_s": 0.01})  # a single try: 429s must not use it up
    inputs = write_inputs(tmp_path / "in", 6)
    with MockApi(route) as api:
        report, oracle, pairs = harvest_all(api.url, spec, inputs, tmp_path / "pairs")
    assert report.queried == 6 and report.failed == 0
    assert oracle.stats.rate_limited == 3
    assert min(state["after"]) - state["first_429"] >= 0.39  # nobody sent during the pause
    assert_inverted(pairs, 6)


def test_client_side_pacing_under_a_published_rate(tmp_path):
    def route(h):
        return 200, {"Content-Type": "image/png"}, invert_png(h.body)

    spec = spec_of(request={"type": "raw"}, response={"type": "image"}, rate_limit={"max_requests_per_s": 20})
    inputs = write_inputs(tmp_path / "in", 6)
    with MockApi(route) as api:
        started = time.perf_counter()
        report, _, _ = harvest_all(api.url, spec, inputs, tmp_path / "pairs")
        assert time.perf_counter() - started >= 5 / 20 - 0.01
    assert report.queried == 6


def test_a_wrong_key_stops_the_harvest_and_is_never_repeated(tmp_path):
    def route(h):
        return unauthorised(h) or (200, {"Content-Type": "image/png"}, invert_png(h.body))

    spec = spec_of(request={"type": "raw"}, response={"type": "image"}, auth={"env": "MOCK_API_KEY"})
    inputs = write_inputs(tmp_path / "in", 3)
    wrong = "sk-wrong-secret-value"
    with MockApi(route) as api:
        oracle = SpecOracle(api.url, spec, environ={"MOCK_API_KEY": wrong})
        assert wrong not in repr(oracle) and "MOCK_API_KEY" in repr(oracle)
        assert wrong not in repr(vars(oracle)) and wrong not in repr(oracle._client.auth)
        with oracle, PairStore(tmp_path / "pairs") as store:
            with pytest.raises(HttpOracleError) as err:
                harvest(oracle, inputs, store, progress=False)
            assert len(store) == 0
    message = str(err.value)
    assert "401" in message and "$MOCK_API_KEY" in message and wrong not in message
    assert wrong not in json.dumps(spec.model_dump())


def test_a_missing_key_variable_is_a_clear_error_before_anything_is_sent():
    spec = spec_of(request={"type": "raw"}, response={"type": "image"}, auth={"env": "MOCK_API_KEY"})
    with pytest.raises(HttpOracleError, match=r"\$MOCK_API_KEY"):
        SpecOracle("http://127.0.0.1:9", spec, environ={})
    with pytest.raises(HttpOracleError, match="not shown"):
        SpecOracle("http://127.0.0.1:9", spec, environ={"MOCK_API_KEY": "two words"})


def test_answers_that_do_not_match_the_spec_stop_the_harvest(tmp_path):
    def route(h):  # answers JSON where the spec says the body is the image
        return 200, {}, {"result": {"png": base64.b64encode(invert_png(h.body)).decode()}}

    inputs = write_inputs(tmp_path / "in", 8)
    with MockApi(route) as api:
        spec = spec_of(request={"type": "raw"}, response={"type": "image"})
        with pytest.raises(HttpOracleError, match="not an image"):
            harvest_all(api.url, spec, inputs, tmp_path / "a")
        spec = spec_of(request={"type": "raw"}, response={"type": "json_base64", "image_path": "result.image"})
        with pytest.raises(HttpOracleError, match=r"response.image_path: result has no 'image' \(it has png\)"):
            harvest_all(api.url, spec, inputs, tmp_path / "b")
        spec = spec_of(request={"type": "raw"}, response={"type": "json_base64", "image_path": "result.png"})
        report, _, pairs = harvest_all(api.url, spec, inputs, tmp_path / "c")
    assert report.queried == 8
    assert_inverted(pairs, 8)


def test_transient_errors_are_retried_and_refusals_fail_one_query(tmp_path):
    calls: dict[bytes, int] = {}

    def route(h):
        calls[h.body] = calls.get(h.body, 0) + 1
        if len(calls) == 1 and calls[h.body] == 1:
            return 503, {}, {"error": "warming up"}
        if len(calls) == 2:
            return 422, {}, {"detail": "unsupported image"}
        return 200, {"Content-Type": "image/png"}, invert_png(h.body)

    spec = spec_of(request={"type": "raw"}, response={"type": "image"})
    inputs = write_inputs(tmp_path / "in", 4)
    with MockApi(route) as api:
        with SpecOracle(api.url, spec, concurrency=1) as oracle, PairStore(tmp_path / "pairs") as store:
            report = harvest(oracle, inputs, store, progress=False)
    assert report.queried == 3 and report.failed == 1
    assert oracle.stats.retries == 1 and oracle.stats.refused == 1


# -- the command line -----------------------------------------------------------------------------

def test_cli_harvest_with_an_api_spec_reads_the_key_from_the_spec_variable(tmp_path):
    from imgsteal.cli import app

    def route(h):
        if (refused := unauthorised(h)):
            return refused
        image = base64.b64decode(json.loads(h.body)["image"])
        return 200, {}, {"data": [{"b64_json": base64.b64encode(invert_png(image)).decode()}]}

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "mock", "request": {"type": "json", "path": "/v1/images/edits", "image_path": "image"},
        "response": {"type": "json_base64", "image_path": "data[0].b64_json"},
        "auth": {"env": "MOCK_API_KEY"}, "price": {"usd": 0.04}, "retry": FAST_RETRY}))
    write_inputs(tmp_path / "in", 3)
    with MockApi(route) as api:
        result = CliRunner().invoke(app, ["harvest", "--oracle", api.url, "--api-spec", str(spec_file),
                                          "--inputs", str(tmp_path / "in"), "--out", str(tmp_path / "pairs")],
                                    env={"MOCK_API_KEY": KEY})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queried"] == 3 and report["spent_usd"] == pytest.approx(0.12)
    assert KEY not in result.output
    assert_key_not_on_disk(tmp_path)

    # The key from an owner-only file instead of the spec's variable; --price replaces the spec's price.
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    with MockApi(route) as api:
        result = CliRunner().invoke(app, ["harvest", "--oracle", api.url, "--api-spec", str(spec_file),
                                          "--api-key-file", str(key_file), "--price", "0.5",
                                          "--inputs", str(tmp_path / "in"), "--out", str(tmp_path / "pairs-file")],
                                    env={"MOCK_API_KEY": None})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queried"] == 3 and report["spent_usd"] == pytest.approx(3 * 0.5 * 12 * 12 / 65536)

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"request": {"type": "json", "imagepath": "image"},
                                   "response": {"type": "image"}, "price": {"usd": 0.04}}))
    result = CliRunner().invoke(app, ["harvest", "--oracle", "http://127.0.0.1:9", "--api-spec", str(bad),
                                      "--inputs", str(tmp_path / "in"), "--out", str(tmp_path / "p2")])
    assert result.exit_code == 2
    assert "request.json.imagepath" in result.stderr and "request.json.image_path" in result.stderr


# -- specs with mistakes --------------------------------------------------------------------------

GOOD = {"request": {"type": "json", "image_path": "input.image"},
        "response": {"type": "json_base64", "image_path": "output"},
        "auth": {"env": "SOME_KEY"}, "price": {"usd": 0.01}}


def with_change(path: str, value) -> dict:
    spec = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node = spec
    for name in parents:
        node = node.setdefault(name, {})
    if value is None:
        node.pop(last)
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize("change, named", [
    (("request.imag_path", "x"), "request.json.imag_path"),  # a typo: extra fields are refused
    (("request.image_path", None), "request.json.image_path"),
    (("request.type", "jsn"), "request"),
    (("response.type", "png"), "response"),
    (("response.image_path", "a..b"), "response.json_base64.image_path"),
    (("price", None), "price"),
    (("price.usd", -1), "price.usd"),
    (("price.per", "image"), "price.per"),
    (("auth.format", "Bearer"), "auth.format"),
    (("auth.env", "my key"), "auth.env"),
    (("auth.key", "sk-123"), "auth.key"),  # no place for the secret itself
    (("request.headers", {"Authorization": "Bearer sk-123"}), "request.json.headers"),
    (("request.fields", {"input": "flat"}), "request.json"),  # the image path runs into a string
    (("rate_limit.status", [429, 503]), "retry"),  # 503 is already a retried status
    (("rate_limit.status", [401]), "rate_limit.status"),  # a refused key is never retried
    (("retry.max_attempts", 0), "retry.max_attempts"),
    (("timeout", 3), "timeout"),
])
def test_a_spec_with_a_mistake_names_the_field(tmp_path, change, named):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(with_change(*change)))
    with pytest.raises(ApiSpecError) as err:
        load_api_spec(path)
    lines = str(err.value).splitlines()
    assert str(path) in lines[0]
    assert any(line.strip().startswith(named) for line in lines[1:]), str(err.value)


def test_spec_files_that_are_not_specs(tmp_path):
    with pytest.raises(ApiSpecError, match="not found"):
        load_api_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ApiSpecError, match="mapping"):
        load_api_spec(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("request: {type: json\n")
    with pytest.raises(ApiSpecError, match="not valid YAML"):
        load_api_spec(tmp_path / "broken.yaml")


def test_json_paths():
    assert parse_json_path("a.b[0].c") == ["a", "b", 0, "c"] == parse_json_path("a.b.0.c")
    assert parse_json_path("data[0][1]") == ["data", 0, 1]
    for bad in ("", "a..b", "a[x]", "a]"):
        with pytest.raises(ValueError):
            parse_json_path(bad)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "api-specs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_load(path):
    spec = load_api_spec(path)
    assert spec.name and spec.price.usd >= 0
