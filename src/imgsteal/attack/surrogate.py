"""Training the surrogate F_A on harvested pairs (the adversary never sees the victim's weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from imgsteal.data.augment import Augmentation
from imgsteal.data.pairs import PairStore
from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
from imgsteal.device import pick_device
from imgsteal.errors import ImgstealError
from imgsteal.models import build_model
from imgsteal.train.loop import TrainingResult, run_training
from imgsteal.train.paired import PixelRecipe


class SurrogateConfig(BaseModel):
    """Everything that defines one surrogate training run (saved as config.json in the run folder)."""

    store: str
    arch: Literal["srresnet", "pix2pix"] = "srresnet"
    seed: int = 0
    fraction: float = Field(1.0, gt=0, le=1)
    augmentation: Augmentation = Augmentation.none
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    patch: int | None = Field(24, description="input-side crop size; None = whole images")
    repeat: int = Field(1, ge=1, description="passes over the pairs per epoch")
    lr: float = 1e-4
    # srresnet
    n_blocks: int = 16
    channels: int = 64
    # pix2pix
    size: int = 256
    lambda_l1: float = 100.0
    device: str = "auto"
    checkpoint_every: int = 200


def load_pairs(store: PairStore, fraction: float, seed: int):
    """Decode the seeded subset of pairs into uint8 tensors; returns (inputs, targets, scale)."""
    records = store.select(fraction, seed)
    inputs, targets, scales = [], [], set()
    for record in records:
        x, y = store.load_pair(record)
        if y.shape[-1] % x.shape[-1] or y.shape[-2] % x.shape[-2]:
            raise ImgstealError(f"pair {record.input_sha256[:12]}: answer {tuple(y.shape)} is not a multiple of query {tuple(x.shape)}")
        scales.add(y.shape[-1] // x.shape[-1])
        inputs.append(to_uint8_tensor(x))
        targets.append(to_uint8_tensor(y))
    if len(scales) != 1:
        raise ImgstealError(f"pair store {store.root} mixes scale factors {sorted(scales)}")
    return inputs, targets, scales.pop()


def train_surrogate(cfg: SurrogateConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
                    on_step=None) -> TrainingResult:
    """Train F_A on a seeded `fraction` of the pairs in `cfg.store`; writes a run folder at `out_dir`."""
    device = pick_device(cfg.device)
    with PairStore(cfg.store, create=False) as store:
        inputs, targets, scale = load_pairs(store, cfg.fraction, cfg.seed)
    import torch

    torch.manual_seed(cfg.seed)
    patch = cfg.patch
    if cfg.arch == "srresnet":
        if scale < 2:
            raise ImgstealError("srresnet is a super-resolution surrogate, but the pairs have answers of the query's size; use --arch pix2pix")
        generator = build_model("srresnet", scale=scale, n_blocks=cfg.n_blocks, channels=cfg.channels)
        recipe = PixelRecipe(generator, device, lr=cfg.lr, loss="mse")
        task, size_multiple = "sr", 1
    else:
        from imgsteal.train.pix2pix import make_pix2pix_recipe

        if scale != 1:
            raise ImgstealError(f"pix2pix is a style-transfer surrogate, but the answers are {scale}x the query size; use --arch srresnet")
        recipe, size_multiple = make_pix2pix_recipe(cfg, device)
        task, patch = "style", cfg.size  # pix2pix trains on size x size crops of the pairs
        small = min((min(x.shape[-2:]) for x in inputs), default=cfg.size)
        if small < cfg.size:
            raise ImgstealError(f"some harvested queries are only {small} px on their shorter side, less than --size {cfg.size}: "
                                f"harvest with --resize {cfg.size} or train at a smaller --size")
    source = PairedPatchSource(inputs, targets, scale=scale, patch=patch, batch_size=cfg.batch_size,
                               seed=cfg.seed, augmentation=cfg.augmentation, repeat=cfg.repeat)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    meta = {"role": "surrogate", "task": task, "scale": scale, "size_multiple": size_multiple, "seed": cfg.seed,
            **({"size": cfg.size} if task == "style" else {}),
            "fraction": cfg.fraction, "pairs": len(inputs), "config": cfg.model_dump(mode="json")}
    return run_training(recipe, source, run_dir=out_dir, epochs=cfg.epochs, meta=meta, resume=resume,
                        checkpoint_every=cfg.checkpoint_every, progress=progress,
                        description=f"surrogate {cfg.arch} seed {cfg.seed}", on_step=on_step)
