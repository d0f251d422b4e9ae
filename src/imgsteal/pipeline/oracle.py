"""The one way to reach a victim as the adversary does: `open_oracle(target, ...)`.

target is either
- an http(s):// URL: imgsteal's own API (`HttpOracle`, key from the caller or $IMGSTEAL_API_KEY), or
  any other image API described by an API spec (`SpecOracle`, key from the spec's environment
  variable); the service's own defences are whatever it runs;
- a victim model (run folder or .safetensors): served on 127.0.0.1 over HTTP by a subprocess with
  `defenses` on and a fresh key named `client` (`transport="http"`, the black box the paper assumes),
  or answered in process with the same defences (`transport="local"`, faster, for tests).

This module sits above both sides: the attack package (imgsteal.attack) never imports the victim's
code; here the two meet, so the harvest, experiments, the demo, defence evaluation and verification
all open their oracles through this one function.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Literal, Mapping

from imgsteal.defenses.registry import DefenseSetup
from imgsteal.errors import ImgstealError

API_KEY_ENV = "IMGSTEAL_API_KEY"
Transport = Literal["http", "local"]


def is_url(target: str | Path) -> bool:
    return str(target).startswith(("http://", "https://"))


@contextlib.contextmanager
def open_oracle(
    target: str | Path,
    *,
    transport: Transport = "http",
    defenses: DefenseSetup | None = None,
    client: str = "adversary",
    device: str = "cpu",
    concurrency: int = 8,
    workdir: str | Path | None = None,
    api_key: str | None = None,
    api_spec=None,
    environ: Mapping[str, str] | None = None,
    server_settings: dict | None = None,
    timeout_s: float | None = None,
) -> Iterator:
    """Yield an Oracle for `target` (see the module docstring) and close it afterwards.

    workdir: for a served model, where its key database, service config, server log and (for the
    watermark) owner-only secrets go; default a temporary folder. server_settings: ServerSettings
    fields for a served model (default: no rate limit, since the adversary is the only client).
    timeout_s: seconds to wait for one answer of a URL oracle (default: the client's own).
    """
    environ = os.environ if environ is None else environ
    defenses = defenses or DefenseSetup()
    if is_url(target):
        if defenses.defenses:
            raise ImgstealError("defences run inside a service; a URL oracle answers with whatever its service runs")
        if api_spec is not None:
            from imgsteal.attack.api_spec import SpecOracle

            if api_key and api_spec.auth is None:
                raise ImgstealError("a key was given but the API spec has no auth section to send it with")
            oracle = SpecOracle(str(target), api_spec, concurrency, api_key=api_key, environ=environ)
        else:
            from imgsteal.attack.http_oracle import HttpOracle

            timeout = {} if timeout_s is None else {"timeout_s": timeout_s}
            oracle = HttpOracle(str(target), api_key=api_key or environ.get(API_KEY_ENV) or None, concurrency=concurrency, **timeout)
        with contextlib.closing(oracle):
            yield oracle
        return
    if api_spec is not None:
        raise ImgstealError(f"an API spec describes a remote service; {target} is a model file")
    model = Path(target)
    if not model.exists():
        raise ImgstealError(f"victim model not found: {target}")
    if transport == "http":
        from imgsteal.victim.launch import ServiceConfig, running_server

        with contextlib.ExitStack() as stack:
            if workdir is None:
                import tempfile

                workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="imgsteal-oracle-"))
            work = Path(workdir)
            _private_owner_dir(work)
            defenses = _with_watermark_db(defenses, work)
            config = ServiceConfig(settings={"rate_per_s": 0, **(server_settings or {})}, defenses=defenses)
            # A new key database per session: key names cannot be reused, and the watermark's client is
            # the key's name, so a resumed harvest must come back under the same name.
            session = len(list(work.glob("api-session-*.sqlite"))) + 1
            server = stack.enter_context(running_server(model, work / f"api-session-{session}.sqlite", device=device,
                                                        workdir=work / "server", config=config))
            from imgsteal.attack.http_oracle import HttpOracle

            oracle = stack.enter_context(contextlib.closing(
                HttpOracle(server.url, api_key=server.create_key(client), concurrency=concurrency)))
            yield oracle
        return
    from imgsteal.defenses.registry import DefenseContext, build_defenses
    from imgsteal.victim.inference import load_translator
    from imgsteal.victim.oracle import LocalOracle

    work = Path(workdir) if workdir is not None else None
    if work is not None:
        _private_owner_dir(work)
        defenses = _with_watermark_db(defenses, work)
    context = DefenseContext(victim_model=model, device=device)
    built = build_defenses(defenses, context)
    oracle = LocalOracle(load_translator(model, device), defenses=built, key_name=client)
    try:
        yield oracle
    finally:
        for defense in built:
            if hasattr(defense, "close"):
                defense.close()
        if work is not None and oracle.defense_labels:
            _add_local_labels(work, oracle.defense_labels)


def _add_local_labels(work: Path, labels) -> None:
    """The in-process oracle has no query log: keep what its defences did, per label, in local-labels.json."""
    import json
    from collections import Counter

    from imgsteal.files import atomic_write_text

    path = work / "local-labels.json"
    total = Counter(json.loads(path.read_text())) if path.exists() else Counter()
    total.update(labels)
    atomic_write_text(path, json.dumps(dict(total)))


def _private_owner_dir(work: Path) -> None:
    """The service's folder holds the owner's secrets (watermark secret and triggers): owner-only."""
    from imgsteal.files import private_dir

    private_dir(work)


def watermark_db(workdir: str | Path) -> Path:
    """Where a victim opened by `open_oracle(model, workdir=...)` keeps its watermark secret and triggers:
    one database for every session, so a resumed harvest keeps the same secret."""
    return Path(workdir) / "watermark.sqlite"


def _with_watermark_db(defenses: DefenseSetup, work: Path) -> DefenseSetup:
    if "watermark" not in defenses.defenses or defenses.options("watermark").db is not None:
        return defenses
    return defenses.merged({"watermark": {"db": str(watermark_db(work))}})


class OracleTranslator:
    """A victim reached only through its API, used where the pipeline needs F_V's answers on test images
    (the report's (A) and (B) scores): `translator(N x 3 x H x W in [0, 1]) -> N x 3 x sH x sW`, each image
    one query through `open_oracle(url, api_spec=...)`. `scale`: the API's upscaling factor (1: style)."""

    def __init__(self, url: str, scale: int, api_spec: str | Path | None = None, concurrency: int = 4):
        if not is_url(url):
            raise ImgstealError(f"not an http(s) URL: {url}")
        self.url, self.scale, self.api_spec, self.concurrency = url, scale, api_spec, concurrency

    def __call__(self, batch):
        import torch

        from imgsteal.data.images import ImageReadError, decode_image, encode_png

        spec = None
        if self.api_spec is not None:
            from imgsteal.attack.api_spec import load_api_spec

            spec = load_api_spec(self.api_spec)
        answers: dict[int, torch.Tensor] = {}
        with open_oracle(self.url, api_spec=spec, concurrency=self.concurrency) as oracle:
            for answer in oracle.stream((i, encode_png(image)) for i, image in enumerate(batch)):
                if answer.image is None:
                    raise ImgstealError(f"{self.url} did not answer a test image: {answer.error}")
                try:
                    answers[answer.key] = decode_image(answer.image, f"answer of {self.url}")
                except ImageReadError as exc:
                    raise ImgstealError(str(exc)) from None
        out = [answers[i] for i in range(len(batch))]
        h, w = batch.shape[-2:]
        for image in out:
            if tuple(image.shape[-2:]) != (h * self.scale, w * self.scale):
                raise ImgstealError(f"{self.url} answered a {w} x {h} px image with {image.shape[-1]} x "
                                    f"{image.shape[-2]} px, not {self.scale}x: is its scale {self.scale}?")
        return torch.stack(out)

    def translate(self, image):
        return self(image.unsqueeze(0))[0]
