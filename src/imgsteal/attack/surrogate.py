"""Training the surrogate F_A on harvested pairs (the adversary never sees the victim's weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from imgsteal.attack.methods import (SR_ARCHS, STYLE_ARCHS, AttackMethod, arch_kind, build_recipe, build_source,
                                     natural_epoch_steps)
from imgsteal.attack.methods.adaptive import AdaptiveOptions
from imgsteal.attack.methods.few_shot import DEFAULT_ZOOMS
from imgsteal.attack.methods.steps import StepSource, epoch_length, epochs_for
from imgsteal.data.augment import Augmentation
from imgsteal.data.pairs import PairRecord, PairStore, query_groups
from imgsteal.data.patches import to_uint8_tensor
from imgsteal.device import pick_device
from imgsteal.errors import ImgstealError
from imgsteal.train.loop import TrainingResult, run_training


# Per-architecture defaults, from each architecture's reference recipe, filled in when a config leaves
# them unset: SRResNet as Ledig et al. (Adam 1e-4, batch 16); pix2pix as Isola et al.'s reference
# (Adam 2e-4 with beta1 0.5 - the recipe's own -, batch 1). docs/fidelity.md lists them.
ARCH_DEFAULTS: dict[str, dict[str, float | int]] = {
    "srresnet": {"lr": 1e-4, "batch_size": 16},
    "edsr": {"lr": 1e-4, "batch_size": 16},
    "msrresnet": {"lr": 1e-4, "batch_size": 16},
    "pix2pix": {"lr": 2e-4, "batch_size": 1},
    "pix2pix_resnet": {"lr": 2e-4, "batch_size": 1},
}


class SurrogateConfig(BaseModel):
    """Everything that defines one surrogate training run (saved as config.json in the run folder).

    lr and batch_size left unset (or None) take the architecture's reference values (ARCH_DEFAULTS).
    """

    store: str
    arch: Literal[SR_ARCHS + STYLE_ARCHS] = Field(  # type: ignore[valid-type]
        "srresnet", description="super-resolution: srresnet, edsr, msrresnet; style: pix2pix (UNet), pix2pix_resnet "
                                "(ResNet generator)")
    attack: AttackMethod = Field(
        "paper", description="training method on the pairs (imgsteal.attack.methods; docs/attacks.md)")
    seed: int = 0
    fraction: float = Field(1.0, gt=0, le=1)
    budget: int | None = Field(None, ge=1, description="train on this many pairs of the seeded subset; nested: "
                               "for one seed, budget k's pairs are among budget k+1's. None = the whole subset")
    budget_order: Literal["seeded", "queried"] = Field(
        "seeded", description="which pairs a budget keeps: a seeded random order, or the order they were queried "
        "(the order of a query-selection strategy)")
    steps: int | None = Field(None, ge=1, description="optimisation steps, whatever the number of pairs "
                              "(compute-matched cells); overrides epochs. None = epochs x steps per epoch")
    augmentation: Augmentation = Augmentation.none
    epochs: int = Field(20, ge=1, description="passes over the pairs; pix2pix's reference trains 100 + 100 epochs on "
                        "sets of 400-3,000 pairs, harvests hold 10^4-10^5, so far fewer epochs give as many steps")
    batch_size: int = Field(16, ge=1, description="default: 16 (srresnet, edsr), 1 (pix2pix, as its reference)")
    patch: int | None = Field(24, description="input-side crop size; None = whole images")
    repeat: int = Field(1, ge=1, description="passes over the pairs per epoch")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate; default: 1e-4 (srresnet, edsr), 2e-4 (pix2pix)")
    # srresnet
    n_blocks: int = 16
    channels: int = 64
    # pix2pix
    size: int = 256
    lambda_l1: float = 100.0
    init: Literal["reference", "pytorch"] = Field(
        "reference", description="[pix2pix] weight initialisation: reference = N(0, 0.02) as pytorch-CycleGAN-and-pix2pix, "
        "pytorch = PyTorch's defaults")
    test_mode: Literal["eval", "train"] = Field(
        "eval", description="how the trained generator answers: eval = running batch-norm statistics, no dropout "
        "(deterministic); train = batch statistics and dropout at test time, one image at a time, as pix2pix's "
        "reference test script (no --eval). Stored in the model; docs/fidelity.md says why eval is the default")
    # domain-shift (Mi et al.)
    wavelet_weight: float = Field(0.15, ge=0, description="weight of the wavelet high-frequency L1 loss")
    sam_rho: float = Field(0.05, ge=0, description="SAM radius (discriminator; generator for SR); 0 = no SAM")
    # few-shot (Spingarn-Eliezer and Michaeli)
    crop_zooms: tuple[float, ...] = Field(DEFAULT_ZOOMS, min_length=1,
                                          description="relative crop sizes, one drawn per batch (> 0)")
    crop_symmetries: bool = Field(True, description="each crop under one of the 8 flips/90-degree rotations; "
                                  "off for a victim that is not equivariant to them")
    # adaptive attacks on output defences (jpeg, resize, noise, overmark, finetune)
    adaptive: AdaptiveOptions = Field(default_factory=AdaptiveOptions,
                                      description="settings of the adaptive attacks (imgsteal.attack.methods.adaptive)")
    device: str = "auto"
    checkpoint_every: int = 200

    @model_validator(mode="before")
    @classmethod
    def _arch_defaults(cls, data):
        """Fill lr and batch_size from ARCH_DEFAULTS when they are not given (or None)."""
        if isinstance(data, dict):
            arch = data.get("arch") or "srresnet"
            defaults = ARCH_DEFAULTS.get(arch, {})
            data = {**data, **{k: v for k, v in defaults.items() if data.get(k) is None}}
        return data


def select_budget(records: list[PairRecord], budget: int | None, seed: int,
                  order: Literal["seeded", "queried"] = "seeded") -> list[PairRecord]:
    """The pairs of `budget` queries of `records` a budget-limited cell trains on (all for None); a
    packed query brings every pair cut from it.

    seeded: a seeded random order of the queries (as PairStore.select returns them), cut after
    `budget`: for one seed and subset, budget k's pairs are among budget k+1's. queried: the first
    `budget` in the order they were stored (query_id), i.e. the order a query-selection strategy sent
    them. Raises ImgstealError when `budget` exceeds the number of queries.
    """
    if budget is None:
        return records
    if budget < 1:
        raise ImgstealError(f"budget must be at least 1 query, got {budget}")
    groups = query_groups(records)
    if budget > len(groups):
        raise ImgstealError(f"budget of {budget} queries is more than the {len(groups)} queries selected; "
                            "harvest more queries or lower the budget")
    if order == "queried":
        first = sorted(groups, key=lambda g: min(r.query_id for r in g))[:budget]
        return sorted((r for g in first for r in g), key=lambda r: (r.query, r.input_sha256))
    import torch

    ranks = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed + 7_919)).tolist()
    return [record for i in sorted(ranks[:budget]) for record in groups[i]]


def load_pairs(store: PairStore, fraction: float, seed: int, budget: int | None = None,
               budget_order: Literal["seeded", "queried"] = "seeded"):
    """Decode the seeded subset of pairs (cut to `budget` pairs, see select_budget) into uint8 tensors;
    returns (inputs, targets, scale)."""
    records = select_budget(store.select(fraction, seed), budget, seed, budget_order)
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
    """Train F_A with cfg.attack on a seeded `fraction` (or `budget`) of the pairs in `cfg.store`, for
    cfg.steps steps or cfg.epochs epochs; writes a run folder at `out_dir`."""
    if any(z <= 0 for z in cfg.crop_zooms):
        raise ImgstealError(f"crop_zooms must all be > 0, got {list(cfg.crop_zooms)}")
    kind = arch_kind(cfg.arch)
    device = pick_device(cfg.device)
    with PairStore(cfg.store, create=False) as store:
        inputs, targets, scale = load_pairs(store, cfg.fraction, cfg.seed, cfg.budget, cfg.budget_order)
    import torch

    torch.manual_seed(cfg.seed)
    if kind == "sr" and scale < 2:
        raise ImgstealError(f"{cfg.arch} is a super-resolution surrogate, but the pairs have answers of the query's size; "
                            "use --arch pix2pix")
    if kind == "style":
        if scale != 1:
            raise ImgstealError(f"{cfg.arch} is a style-transfer surrogate, but the answers are {scale}x the query size; "
                                "use --arch srresnet")
        if cfg.arch == "pix2pix":
            from imgsteal.train.pix2pix import unet_depth_for

            unet_depth_for(cfg.size)  # a size the UNet cannot take is the first thing to say
        small = min((min(x.shape[-2:]) for x in inputs), default=cfg.size)
        if small < cfg.size:
            raise ImgstealError(f"some harvested queries are only {small} px on their shorter side, less than --size {cfg.size}: "
                                f"harvest with --resize {cfg.size} or train at a smaller --size")
    # Training length: epochs of the data's natural length, or exactly cfg.steps steps cut into
    # bookkeeping epochs of at least ~100 steps (a run on one pair must not checkpoint every step).
    natural = natural_epoch_steps(cfg, len(inputs))
    if cfg.steps is not None or cfg.attack == "few-shot":
        total = cfg.steps if cfg.steps is not None else cfg.epochs * natural
        per_epoch = epoch_length(total, natural)
        epochs = epochs_for(total, per_epoch)
    else:
        total, per_epoch, epochs = cfg.epochs * natural, natural, cfg.epochs
    source = build_source(cfg, inputs, targets, scale, steps_per_epoch=per_epoch)
    if source.batches_per_epoch != per_epoch:
        source = StepSource(source, per_epoch)
    recipe, size_multiple = build_recipe(cfg, scale, device, epochs=epochs, total_steps=total)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    meta = {"role": "surrogate", "kind": kind, "scale": scale, "size_multiple": size_multiple, "seed": cfg.seed,
            **({"size": cfg.size} if kind == "style" else {}), "attack": cfg.attack,
            "fraction": cfg.fraction, "pairs": len(inputs), "mode": cfg.test_mode, "config": cfg.model_dump(mode="json")}
    length = {"steps": total} if total != epochs * per_epoch else {}
    return run_training(recipe, source, run_dir=out_dir, epochs=epochs, meta=meta, resume=resume,
                        checkpoint_every=cfg.checkpoint_every, progress=progress,
                        description=f"surrogate {cfg.arch} {cfg.attack} seed {cfg.seed}", on_step=on_step, **length)
