"""The victim's answers on the test images, computed once per experiment and shared by every cell.

Each of the grid's cells scores its surrogate against F_V's outputs on the same test images; the
victim's forward pass is the same in all of them, so it is cached as 8-bit PNG files keyed by the
sha256 of the exact input tensor. The evaluation quantises the victim's answers to 8 bits anyway
(the API returns PNG), so a cached answer is exactly the answer the cell would have computed. A
miss (another machine's floating point, a new test image) computes the answer and stores it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from imgsteal.data.images import decode_image, encode_png


def tensor_key(image: torch.Tensor) -> str:
    """sha256 of a C x H x W tensor's shape and float32 bytes."""
    data = image.detach().to(torch.float32).contiguous().cpu()
    digest = hashlib.sha256(str(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


class VictimCache:
    """A Translator look-alike: `cache(N x 3 x H x W in [0, 1]) -> N x 3 x sH x sW in [0, 1]` (8-bit values).

    model_path: the victim model, loaded on the first miss only, or the URL of its API (a miss is then
    a query; `scale` and, for a third-party API, `api_spec` say how to reach and read it); folder:
    where answers are stored. Other attributes (task, scale, ...) are read from the loaded victim.
    """

    def __init__(self, model_path: str | Path, folder: str | Path, device: str = "auto", *,
                 scale: int | None = None, api_spec: str | None = None) -> None:
        from imgsteal.pipeline.oracle import is_url

        self.model_path = str(model_path) if is_url(model_path) else Path(model_path)
        self.folder = Path(folder)
        self.device = device
        self.url_scale, self.api_spec = scale, api_spec
        self._translator = None
        self.hits = 0
        self.misses = 0

    @property
    def translator(self):
        if self._translator is None:
            from imgsteal.pipeline.oracle import OracleTranslator, is_url
            from imgsteal.victim.inference import load_translator

            if is_url(self.model_path):
                if self.url_scale is None:
                    raise ValueError("a victim reached by URL needs its scale")
                self._translator = OracleTranslator(str(self.model_path), self.url_scale, self.api_spec)
            else:
                self._translator = load_translator(self.model_path, self.device)
        return self._translator

    def __getattr__(self, name: str):
        # Only reached for attributes this class lacks (scale, task, size_multiple, info ...).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.translator, name)

    def _path(self, image: torch.Tensor) -> Path:
        return self.folder / f"{tensor_key(image)}.png"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor | None] = []
        missing: list[int] = []
        for i, image in enumerate(batch):
            path = self._path(image)
            if path.is_file():
                outputs.append(decode_image(path.read_bytes()))
                self.hits += 1
            else:
                outputs.append(None)
                missing.append(i)
        if missing:
            self.misses += len(missing)
            answers = self.translator(batch[missing])
            self.folder.mkdir(parents=True, exist_ok=True)
            for i, answer in zip(missing, answers):
                data = encode_png(answer)
                path = self._path(batch[i])
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)  # concurrent cells may write the same answer: last rename wins, same bytes
                outputs[i] = decode_image(data)
        return torch.stack(outputs)  # type: ignore[arg-type]

    def translate(self, image: torch.Tensor) -> torch.Tensor:
        return self(image.unsqueeze(0))[0]
