"""An in-process oracle: the victim model answering encoded images, as its API would.

It lives on the victim side so that the adversary's code (imgsteal.attack) never imports a
checkpoint loader: the attack sees only the `Oracle` interface, exactly as over HTTP.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Hashable, Iterable, Iterator, Sequence

import torch

from imgsteal.attack.oracle import OracleAnswer
from imgsteal.data.images import ImageReadError, decode_image, encode_png, sha256_bytes
from imgsteal.victim.inference import Translator

if TYPE_CHECKING:
    from imgsteal.defenses.base import Defense


class LocalOracle:
    """Answers requests with `translator`, batching same-size images up to `max_batch`.

    defenses: output defences (the server's `Defense` objects) applied in order to every answer, as
    if all requests came with the API key named `key_name`; `defense_labels` counts what they did.
    """

    def __init__(self, translator: Translator, max_batch: int = 8, postprocess=None,
                 defenses: Sequence["Defense"] = (), key_name: str = "local") -> None:
        self.translator = translator
        self.max_batch = max_batch
        self.concurrency = max_batch
        # Optional output defence hook: (input tensor, output tensor, input bytes) -> output tensor.
        self.postprocess = postprocess
        self.defenses = list(defenses)
        self.key_name = key_name
        self.defense_labels: Counter[str] = Counter()

    def _answer(self, group: list[tuple[Hashable, bytes, torch.Tensor]]) -> Iterator[OracleAnswer]:
        started = time.perf_counter()
        outputs = self.translator(torch.stack([image for _, _, image in group]))
        latency = (time.perf_counter() - started) / len(group)
        for (key, data, image), out in zip(group, outputs):
            if self.postprocess is not None:
                out = self.postprocess(image, out, data)
            if self.defenses:
                sha = sha256_bytes(data)
                for defense in self.defenses:
                    out, label = defense.apply(self.key_name, image, out, sha)
                    if label:
                        self.defense_labels[label] += 1
            yield OracleAnswer(key=key, image=encode_png(out), latency_s=latency)

    def stream(self, requests: Iterable[tuple[Hashable, bytes]]) -> Iterator[OracleAnswer]:
        pending: list[tuple[Hashable, bytes, torch.Tensor]] = []
        for key, data in requests:
            try:
                image = decode_image(data)
            except ImageReadError as exc:
                yield OracleAnswer(key=key, image=None, error=str(exc))
                continue
            if pending and (len(pending) >= self.max_batch or pending[0][2].shape != image.shape):
                yield from self._answer(pending)
                pending = []
            pending.append((key, data, image))
        if pending:
            yield from self._answer(pending)

    def close(self) -> None:
        pass
