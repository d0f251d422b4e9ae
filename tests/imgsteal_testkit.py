"""Helpers shared by the tests: tiny images, tiny random-init models, test servers.

One plain module with a unique name, importable because pytest's `pythonpath` holds tests/
(`from imgsteal_testkit import ...`). Test files never import `conftest` or a package named `tests`
(torch-fidelity, for one, installs a top-level `tests` package), and every function a test sends to
worker processes lives here, so a spawned worker finds it by this module's name. The conftest.py
files hold fixtures only.
"""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

# -- images ----------------------------------------------------------------------------------------


def write_images(folder: Path, count: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[Path]:
    """`count` smooth random colour PNGs img_000.png ... of `size` (width, height) px in `folder`
    (smooth, so bicubic and SR have structure to work with)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize(size, Image.BICUBIC)
        path = folder / f"img_{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


def write_named_images(folder: Path, stems: list[str], seed: int, size: int = 40, suffix: str = ".png") -> None:
    """One random-noise size x size px image per stem, saved as folder/<stem><suffix>."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for stem in stems:
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{stem}{suffix}")


def smooth_png_bytes(height: int = 12, width: int = 16, seed: int = 0) -> bytes:
    """A smooth random RGB image as PNG bytes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(buf, format="PNG")
    return buf.getvalue()


def png_bytes(height: int = 16, width: int = 16, seed: int = 0, mode: str = "RGB") -> bytes:
    """A random-noise image of `mode` (RGB, RGBA, L, I;16) encoded as PNG."""
    rng = np.random.default_rng(seed)
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    elif mode == "L":
        img = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
    elif mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        raise ValueError(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(height: int = 16, width: int = 24, seed: int = 0, orientation: int | None = None) -> bytes:
    """A random-noise RGB JPEG (quality 90), with an EXIF orientation tag when `orientation` is given."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if orientation is None:
        img.save(buf, format="JPEG", quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


# -- tiny models -------------------------------------------------------------------------------------


def make_sr_model(path: Path, seed: int = 0, role: str = "victim", with_discriminator: bool = False) -> Path:
    """A random-init 4x SRResNet (1 block, 8 channels) saved at `path` as training would export it.

    with_discriminator: also write the training checkpoint path.parent/checkpoints/last.safetensors
    holding a tiny SRGAN discriminator beside the generator, as a victim run folder has (the PGD
    defence reads the discriminator from there)."""
    import torch

    from imgsteal.models import build_model
    from imgsteal.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    generator = build_model("srresnet", scale=4, n_blocks=1, channels=8)
    meta = {"role": role, "kind": "sr", "scale": 4, "archs": {"generator": generator.build_spec}, "export": "generator"}
    if with_discriminator:
        discriminator = build_model("vgg_discriminator", base_channels=4, dense=16)
        full = {**meta, "archs": {**meta["archs"], "discriminator": discriminator.build_spec}}
        save_checkpoint(Path(path).parent / "checkpoints" / "last.safetensors", full,
                        {"generator": generator, "discriminator": discriminator})
        meta = full
    return save_checkpoint(path, meta, {"generator": generator})


def make_tiny_victim(folder: Path, seed: int = 0) -> Path:
    """A random-init 4x SRResNet saved as folder/model.safetensors."""
    return make_sr_model(folder / "model.safetensors", seed)


def make_victim_run(folder: Path, seed: int = 0) -> Path:
    """A random-init tiny SRGAN victim run folder: model.safetensors (generator) and a training
    checkpoint checkpoints/last.safetensors with the generator and the discriminator."""
    make_sr_model(folder / "model.safetensors", seed, with_discriminator=True)
    return folder


def make_style_model(path: Path, arch: str, role: str, seed: int = 0, size: int = 32) -> Path:
    """A random-init style generator saved as training would export it: a CycleGAN victim
    (arch 'resnet_generator') or a pix2pix surrogate (arch 'unet', built for `size` px)."""
    import torch

    from imgsteal.models import build_model
    from imgsteal.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    if arch == "unet":
        generator = build_model("unet", ngf=4, image_size=size)
        extra = {"size_multiple": 2**generator.depth, "size": size}
    else:
        generator = build_model("resnet_generator", ngf=4, n_blocks=1)
        extra = {"size_multiple": 1, "size": size}
    meta = {"role": role, "kind": "style", "scale": 1, **extra, "archs": {"generator": generator.build_spec}, "export": "generator"}
    return save_checkpoint(path, meta, {"generator": generator})


# -- experiments -------------------------------------------------------------------------------------


def tiny_sr_config(root: Path, **grid) -> dict:
    """A tiny SR experiment config on data written under `root` (random-init victim, 8 query images,
    2 test images, 8-channel nets); `grid` keys override the grid's."""
    victim = root / "victim" / "model.safetensors"
    if not victim.exists():
        make_sr_model(victim)
        write_images(root / "adv", 8, size=(48, 48), seed=2)
        write_images(root / "test", 2, size=(48, 48), seed=3)
    return {
        "name": "tiny",
        "grid": {"fractions": [0.5, 1.0], "augmentations": ["none"], "seeds": 1, **grid},
        "tasks": [{
            "name": "sr", "title": "Tiny SR", "kind": "sr", "device": "cpu",
            "victim": {"model": str(victim)},
            "harvest": {"inputs": [str(root / "adv")], "downscale": 4, "oracle": "local"},
            "surrogate": {"n_blocks": 1, "channels": 8, "patch": 8, "batch_size": 4, "epochs": 1},
            "test_sets": {"tiny test": str(root / "test")},
            "evaluation": {"gallery_images": 2},
        }],
    }


def square_or_fail(x: int) -> int:
    """x * x, or ValueError for 3: a job function for the executor tests (runs in worker processes)."""
    if x == 3:
        raise ValueError("three is not allowed")
    return x * x


# -- user study --------------------------------------------------------------------------------------


def make_task_dirs(root: Path, name: str, n: int, seed: int = 0):
    """originals / victim / surrogate / style folders for one study task with `n` matching stems;
    returns its imgsteal.study.create.TaskSpec."""
    from imgsteal.study.create import TaskSpec

    stems = [f"{name}_{i:02d}" for i in range(n)]
    base = root / name
    write_named_images(base / "originals", stems, seed)
    write_named_images(base / "victim", stems, seed + 1)
    write_named_images(base / "surrogate", stems, seed + 2, suffix=".jpg")
    write_named_images(base / "style", [f"style_{i}" for i in range(3)], seed + 3)
    return TaskSpec(
        name=name,
        originals=base / "originals",
        victim=base / "victim",
        surrogate=base / "surrogate",
        style_examples=base / "style",
        style="Monet painting" if name == "monet" else "anime character",
    )


@contextlib.contextmanager
def running_study_server(study_dir: Path) -> Iterator[str]:
    """Serve the study with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    from imgsteal.study.app import create_app
    from imgsteal.study.serve import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(study_dir), log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
