"""Inception pool3 features for FID and KID: finding the weights, running the network, caching results.

Weights (the FID Inception file pytorch-fid uses) are looked up in this order: an explicit path,
the environment variable IMGSTEAL_INCEPTION_WEIGHTS, torch hub's cache
(`torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth`), and finally a download
into that cache. If none works, `WeightsUnavailableError` says how to supply them: no number is
ever computed from random weights.

Features of an image folder are cached on disk, keyed by the sha256 of every file, the sha256 of
the weights and the resize settings, so evaluating the same folder again costs only hashing.
Cache root: `cache_dir` argument, else $IMGSTEAL_CACHE, else $XDG_CACHE_HOME/imgsteal or
~/.cache/imgsteal; features live in its `features/` folder as plain .npy arrays.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from imgsteal.errors import WeightsUnavailableError
from imgsteal.metrics.inception import FEATURE_DIM, INPUT_SIZE, RESIZE_SETTINGS, FIDInceptionV3, read_weights_file

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "IMGSTEAL_INCEPTION_WEIGHTS"
CACHE_ENV = "IMGSTEAL_CACHE"
# Bump when anything that changes feature values changes (model code, preprocessing).
FEATURE_VERSION = 1
_DOWNLOAD_TIMEOUT_S = 60

ImageSource = Union[str, os.PathLike, torch.Tensor, Sequence[torch.Tensor]]


# ----------------------------------------------------------------------------- weights


def hub_weights_path() -> Path:
    """Where torch hub (and pytorch-fid) keep the FID Inception weights on this machine."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


def _unavailable(reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"FID Inception weights unavailable: {reason}. Supply them with --inception-weights PATH "
        f"(library: weights=PATH) or the environment variable {WEIGHTS_ENV}=PATH, or put "
        f"{FID_WEIGHTS_FILENAME} (from {FID_WEIGHTS_URL}) at {hub_weights_path()}"
    )


def resolve_inception_weights(weights: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Path of the FID Inception weights: explicit path > $IMGSTEAL_INCEPTION_WEIGHTS > hub cache > download.

    Raises WeightsUnavailableError (naming the path option, the env var and the cache path) when an
    explicit file is missing, or nothing is cached and the download is off or fails.
    """
    for given, origin in ((weights, "weights path"), (os.environ.get(WEIGHTS_ENV) or None, WEIGHTS_ENV)):
        if given is not None:
            path = Path(given).expanduser()
            if not path.exists():
                raise _unavailable(f"{origin} {path} does not exist")
            if not path.is_file():
                raise _unavailable(f"{origin} {path} is not a file")
            if not os.access(path, os.R_OK):
                raise _unavailable(f"{origin} {path} cannot be read (permission denied)")
            return path
    cached = hub_weights_path()
    if cached.is_file():
        return cached
    if not download:
        raise _unavailable(f"{cached} does not exist and downloading is disabled")
    cached.parent.mkdir(parents=True, exist_ok=True)
    # torch's downloader has no timeout of its own; a black-holed network must not hang a CLI forever.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(cached), progress=True)
    except Exception as exc:  # any network/HTTP/disk failure means the same thing to the user
        raise _unavailable(f"not cached at {cached} and the download failed ({exc})") from exc
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return cached


def weights_named(weights: str | os.PathLike | None = None) -> bool:
    """Whether the user named a weights file (argument or $IMGSTEAL_INCEPTION_WEIGHTS). A named file
    must work: only without one may a missing file mean "skip FID"."""
    return weights is not None or bool(os.environ.get(WEIGHTS_ENV))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _weights_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def weights_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a weights file (memoised per path, size and mtime): its identity in feature cache keys."""
    stat = Path(path).stat()
    return _weights_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def load_fid_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read and check a FID Inception state dict (tensors only: torch.load with weights_only=True)."""
    try:
        state = read_weights_file(path)
    except ValueError as exc:
        raise _unavailable(str(exc)) from None
    if not isinstance(state, dict):
        raise _unavailable(f"{path} holds a {type(state).__name__}, not a state dict")
    expected = {k: v.shape for k, v in FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected.keys() - given), sorted(given - expected.keys())
    wrong_shape = sorted(k for k in expected.keys() & given if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        )
        raise _unavailable(f"{path} is not an FID Inception-v3 state dict ({details})")
    return state


@functools.lru_cache(maxsize=2)
def _load_prepared(path: str, fingerprint: str, device: str) -> FIDInceptionV3:
    model = FIDInceptionV3()
    model.load_state_dict(load_fid_state_dict(path), strict=False)  # keys checked above
    return model.prepare_for_inference().to(device)


def load_inception(weights: str | os.PathLike | None = None, device: str | torch.device | None = None,
                   *, download: bool = True) -> tuple[FIDInceptionV3, str]:
    """Ready-to-run FID Inception (eval, batch norm folded) and the sha256 of its weights.

    Memoised per weights file and device, so repeated evaluations load the file once.
    """
    path = resolve_inception_weights(weights, download=download)
    return _load_resolved(path, device), weights_fingerprint(path)


def _load_resolved(path: Path, device: str | torch.device | None) -> FIDInceptionV3:
    from imgsteal.device import pick_device

    dev = pick_device(str(device) if device is not None else None)
    return _load_prepared(str(path.resolve()), weights_fingerprint(path), str(dev))


# ----------------------------------------------------------------------------- cache


def default_cache_root() -> Path:
    """$IMGSTEAL_CACHE, else $XDG_CACHE_HOME/imgsteal, else ~/.cache/imgsteal."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imgsteal"


class FeatureCache:
    """Feature arrays on disk, one .npy per key (no pickles: loaded with allow_pickle=False)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.dir = Path(root).expanduser() / "features" if root is not None else default_cache_root() / "features"

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The array stored under `key`, or None (also for an unreadable entry, which is recomputed)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            features = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return features if features.ndim == 2 and features.shape[1] == FEATURE_DIM else None

    def put(self, key: str, features: np.ndarray) -> None:
        """Store atomically (write to a temporary file, then rename), so readers never see half a file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(features, dtype=np.float32))
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def folder_cache_key(file_hashes: Sequence[str], weights_sha256: str) -> str:
    """Cache key of a folder's features: its files' contents (in listing order), weights and preprocessing."""
    payload = json.dumps(
        {"version": FEATURE_VERSION, "weights": weights_sha256, "resize": RESIZE_SETTINGS, "files": list(file_hashes)},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


# ----------------------------------------------------------------------------- extraction


def _decode_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _iter_folder_batches(paths: Sequence[Path], batch_size: int) -> Iterator[list[torch.Tensor]]:
    """Decoded images in batches; decoding runs in threads (PIL releases the GIL while decoding)."""
    from imgsteal.data.images import load_images

    with ThreadPoolExecutor(max_workers=_decode_workers()) as pool:
        chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        # Split each batch across the threads; load_images skips broken files with a warning.
        for chunk in chunks:
            parts = [chunk[i :: _decode_workers()] for i in range(_decode_workers())]
            loaded = {p: img for part in pool.map(load_images, [x for x in parts if x]) for p, img in part}
            yield [loaded[p] for p in chunk if p in loaded]


def _to_inception_batch(images: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Equal-sized images are stacked and resized together (the model resizes); mixed sizes one by one."""
    if len({tuple(img.shape) for img in images}) == 1:
        return torch.stack(list(images)).to(device, non_blocking=True)
    resized = [
        F.interpolate(img.unsqueeze(0).to(device), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        for img in images
    ]
    return torch.cat(resized)


@torch.inference_mode()
def _run(model: FIDInceptionV3, batches: Iterator[Sequence[torch.Tensor]], device: torch.device) -> np.ndarray:
    outputs = []
    # Keep float32 convolutions exact on GPUs (no TF32), so features do not depend on the card.
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
        for batch in batches:
            if len(batch) == 0:
                continue
            x = _to_inception_batch(batch, device)
            outputs.append(model(x).float().cpu().numpy())
    if not outputs:
        return np.zeros((0, FEATURE_DIM), dtype=np.float32)
    return np.concatenate(outputs)


def _validate_tensor(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected N x 3 x H x W images in [0, 1], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
    return images


def inception_features(
    images: ImageSource,
    *,
    weights: str | os.PathLike | None = None,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Inception pool3 features: (N, 2048) float32 array, one row per image.

    `images`: a folder (all images under it, recursively, in sorted order; unreadable files are
    skipped with a warning), an N x 3 x H x W float tensor in [0, 1], or a list of 3 x H x W tensors.
    Folder features are cached on disk (see module doc) unless `cache=False`; tensors are not cached.
    Raises WeightsUnavailableError when no weights can be found, FileNotFoundError for a missing
    folder, ValueError for an empty folder or a malformed tensor.
    """
    from imgsteal.data.images import list_images
    from imgsteal.device import pick_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        paths = list_images(folder)
        if not paths:
            raise ValueError(f"no images found in {folder}")
        weights_path = resolve_inception_weights(weights)
        pick_device(str(device) if device is not None else None)  # fail on a bad --device even on a cache hit
        store = FeatureCache(cache_dir) if cache else None
        key = None
        if store is not None:
            with ThreadPoolExecutor(max_workers=_decode_workers()) as pool:
                key = folder_cache_key(list(pool.map(file_sha256, paths)), weights_fingerprint(weights_path))
            hit = store.get(key)
            if hit is not None:
                return hit  # the network is not even loaded
        model = _load_resolved(weights_path, device)
        dev = next(model.parameters()).device
        features = _run(model, _iter_folder_batches(paths, batch_size), dev)
        if len(features) == 0:
            raise ValueError(f"no readable images in {folder}")
        if store is not None and key is not None:
            store.put(key, features)
        return features

    if isinstance(images, torch.Tensor):
        tensor = _validate_tensor(images)
        items: Sequence[torch.Tensor] = list(tensor)
    else:
        items = []
        for img in images:
            if not isinstance(img, torch.Tensor) or img.dim() != 3:
                raise ValueError("a list of images must hold 3 x H x W tensors in [0, 1]")
            items.append(_validate_tensor(img)[0])
    if len(items) == 0:
        raise ValueError("no images given")
    model, _ = load_inception(weights, device)
    dev = next(model.parameters()).device
    batches = (items[i : i + batch_size] for i in range(0, len(items), batch_size))
    return _run(model, batches, dev)
