"""The inference API in process: keys, rate limit, answers, image modes, query log, defences hook."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from imgsteal.data.images import decode_image, encode_png, sha256_bytes
from imgsteal.victim.accounts import AccountsDB
from imgsteal.victim.server import ServerSettings, TokenBucketLimiter

UNLIMITED = ServerSettings(rate_per_s=0)


def new_key(db, name="alice") -> dict:
    with AccountsDB(db) as accounts:
        return {"Authorization": f"Bearer {accounts.create_key(name)[1]}"}


def post_png(client, headers, data: bytes, media="image/png"):
    return client.post("/v1/translate", content=data, headers={**headers, "Content-Type": media})


def test_health_and_info_say_nothing_about_the_network(api_client):
    client, db = api_client(UNLIMITED)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/v1/info").status_code == 401
    info = client.get("/v1/info", headers=new_key(db)).json()
    assert info["kind"] == "sr" and info["scale"] == 4
    assert set(info) == {"kind", "scale", "input_media_types", "output_media_type", "limits", "key"}
    assert info["limits"]["max_pixels"] == UNLIMITED.max_pixels
    text = json.dumps(info).lower()
    for secret in ("srresnet", "block", "channel", "generator", "arch", "weight", "safetensors"):
        assert secret not in text
    assert client.get("/openapi.json").status_code == 404


def test_missing_wrong_and_revoked_keys(api_client, kit):
    client, db = api_client(UNLIMITED)
    good = new_key(db)
    data = kit.png_bytes()
    assert post_png(client, {}, data).status_code == 401
    wrong = good["Authorization"][:-3] + "xyz"
    r = post_png(client, {"Authorization": wrong}, data)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert post_png(client, {"X-API-Key": good["Authorization"].split()[1]}, data).status_code == 200
    with AccountsDB(db) as accounts:
        accounts.revoke_key("alice")
    r = post_png(client, good, data)
    assert r.status_code == 403 and "revoked" in r.json()["error"]
    with AccountsDB(db) as accounts:
        assert len(accounts.queries("alice")) == 1  # refusals are not logged as answers


def test_answers_match_the_model_and_every_answer_is_logged(api_client, tiny_translator, kit):
    client, db = api_client(UNLIMITED)
    key = new_key(db)
    data = kit.png_bytes(16, 20, seed=3)
    raw = post_png(client, key, data)
    form = client.post("/v1/translate", files={"image": ("x.png", data, "image/png")}, headers=key)
    assert raw.status_code == form.status_code == 200
    assert raw.headers["content-type"] == "image/png"
    assert raw.content == form.content  # same bytes in, same answer out, either way of sending
    out = decode_image(raw.content)
    assert out.shape == (3, 64, 80)
    expected = tiny_translator.translate(decode_image(data))
    assert torch.allclose(out, expected, atol=1 / 255 + 1e-6)
    with AccountsDB(db) as accounts:
        rows = accounts.queries("alice")
    assert [r["query_id"] for r in rows] == [int(raw.headers["x-query-id"]), int(form.headers["x-query-id"])]
    for row, response in zip(rows, (raw, form)):
        assert row["input_sha256"] == sha256_bytes(data)
        assert row["output_sha256"] == sha256_bytes(response.content)
        assert (row["input_bytes"], row["input_width"], row["input_height"]) == (len(data), 20, 16)
        assert row["latency_ms"] > 0 and row["defense"] is None


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_alpha_and_16_bit_inputs(api_client, kit, mode):
    client, db = api_client(UNLIMITED)
    r = post_png(client, new_key(db), kit.png_bytes(12, 16, seed=1, mode=mode))
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (64, 48)


def test_exif_rotated_jpeg_is_answered_upright(api_client, kit):
    client, db = api_client(UNLIMITED)
    # Stored 24 wide x 16 high; orientation 6 means "rotate 90 degrees": shown 16 wide x 24 high.
    r = post_png(client, new_key(db), kit.jpeg_bytes(16, 24, orientation=6), media="image/jpeg")
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (64, 96)
    with AccountsDB(db) as accounts:
        row = accounts.queries()[0]
    assert (row["input_width"], row["input_height"]) == (16, 24)


def test_rate_limit_is_per_key_and_says_when_to_retry(api_client, kit):
    client, db = api_client(ServerSettings(rate_per_s=0.5, burst=2))
    alice, bob = new_key(db, "alice"), new_key(db, "bob")
    data = kit.png_bytes()
    assert [post_png(client, alice, data).status_code for _ in range(2)] == [200, 200]
    limited = post_png(client, alice, data)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    assert post_png(client, bob, data).status_code == 200  # another key has its own bucket
    with AccountsDB(db) as accounts:
        assert len(accounts.queries("alice")) == 2


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucketLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1) == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take(1) == 0.0
    now[0] += 100.0  # refill caps at the burst size
    assert [bucket.take(1) for _ in range(4)][-1] > 0
    assert TokenBucketLimiter(rate=0, burst=1).take(1) == 0.0


class Invert:
    """A stand-in output defence: inverts answers for one key and says so."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.seen: list[str] = []

    def apply(self, key_name, input_image, output_image, input_sha256):
        self.seen.append(input_sha256)
        if key_name != self.target:
            return output_image, None
        return 1 - output_image, "invert"


def test_defences_post_process_answers_and_are_logged(api_client, tiny_translator, kit):
    defense = Invert("mallory")
    client, db = api_client(UNLIMITED, defenses=[defense])
    data = kit.png_bytes(seed=5)
    plain = post_png(client, new_key(db, "alice"), data)
    defended = post_png(client, new_key(db, "mallory"), data)
    assert plain.status_code == defended.status_code == 200
    expected = tiny_translator.translate(decode_image(data))
    assert torch.allclose(decode_image(plain.content), expected, atol=1 / 255 + 1e-6)
    assert torch.allclose(decode_image(defended.content), 1 - expected, atol=1 / 255 + 1e-6)
    assert defense.seen == [sha256_bytes(data)] * 2
    with AccountsDB(db) as accounts:
        assert [r["defense"] for r in accounts.queries()] == [None, "invert"]


class Exploding(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("CUDA out of memory (simulated)")


def test_a_failing_model_answers_500_and_the_service_goes_on(api_client, tiny_translator, kit):
    from imgsteal.victim.inference import Translator

    client, db = api_client(UNLIMITED, translator=Translator(Exploding(), kind="sr", scale=4))
    key = new_key(db)
    r = post_png(client, key, kit.png_bytes())
    assert r.status_code == 500 and "out of memory" not in r.text  # no internals leak
    assert post_png(client, key, kit.png_bytes()).status_code == 500
    assert client.get("/healthz").status_code == 200
    with AccountsDB(db) as accounts:
        assert accounts.queries() == []


def test_default_output_is_png_of_the_translator(api_client, tiny_translator, kit):
    client, db = api_client(UNLIMITED)
    data = kit.png_bytes(8, 8, seed=9)
    r = post_png(client, new_key(db), data)
    assert r.content == encode_png(tiny_translator.translate(decode_image(data)))
