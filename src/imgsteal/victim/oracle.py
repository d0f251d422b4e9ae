"""An in-process oracle: the victim model answering encoded images, as its API would.

It lives on the victim side so that the adversary's code (imgsteal.attack) never imports a
checkpoint loader: the attack sees only the `Oracle` interface, exactly as over HTTP.
"""

from __future__ import annotations

import time
from typing import Hashable, Iterable, Iterator

import torch

from imgsteal.attack.oracle import OracleAnswer
from imgsteal.data.images import ImageReadError, decode_image, encode_png
from imgsteal.victim.inference import Translator


class LocalOracle:
    """Answers requests with `translator`, batching same-size images up to `max_batch`."""

    def __init__(self, translator: Translator, max_batch: int = 8, postprocess=None) -> None:
        self.translator = translator
        self.max_batch = max_batch
        self.concurrency = max_batch
        # Optional output defence hook: (input tensor, output tensor, input bytes) -> output tensor.
        self.postprocess = postprocess

    def _answer(self, group: list[tuple[Hashable, bytes, torch.Tensor]]) -> Iterator[OracleAnswer]:
        started = time.perf_counter()
        outputs = self.translator(torch.stack([image for _, _, image in group]))
        latency = (time.perf_counter() - started) / len(group)
        for (key, data, image), out in zip(group, outputs):
            if self.postprocess is not None:
                out = self.postprocess(image, out, data)
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
