"""`imgsteal audit`: how many queries, and dollars, does a copy of my model cost?

An owner points it at their model and at a pool of images an adversary could send; it runs the
strongest configured attacks at increasing query budgets against that one victim - an experiment
whose grid is attacks x budgets x seeds, through the same pipeline as every experiment - and writes
the report: the fidelity-vs-queries figure with a dollars axis, one line per attack with a ± std band
over seeds, the do-nothing baseline, the table "queries and dollars needed to reach X", and the
copies at each budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imgsteal.errors import ImgstealError

# Compute-matched steps per cell when the caller does not say: enough for the few-shot attack to
# converge at demo scale on a CPU (its paper trains far longer on a GPU).
DEFAULT_STEPS = {"sr": 400, "style": 600}
DEFAULT_ATTACKS = ("paper", "few-shot", "domain-shift")


class AuditConfig(BaseModel):
    """What to audit and how hard to try."""

    model_config = ConfigDict(extra="forbid")

    victim: str = Field(description="the victim: a model (run folder, .safetensors or an imported public file) or "
                                    "the URL of its API")
    api_spec: str | None = Field(None, description="[URL] API spec of a third-party API (docs/api-spec.md)")
    scale: int | None = Field(None, ge=1, description="[URL] the API's upscaling factor, 1 for style transfer "
                                                      "(default: asked from an imgsteal API's /v1/info)")
    inputs: list[str] = Field(min_length=1, description="the adversary's image pool: folders or dataset specs")
    test_sets: dict[str, str] = Field(min_length=1, description="display name -> folder or dataset spec")
    budget: int = Field(ge=1, description="the largest number of queries tried")
    attacks: list[str] = Field(default_factory=lambda: list(DEFAULT_ATTACKS))
    seeds: int = Field(2, ge=1)
    steps: int | None = Field(None, ge=1, description="training steps of every copy (default per kind)")
    selection: str = Field("random", description="query selection: random, diverse or adaptive")
    price_usd: float = Field(0.016, ge=0, description="price of one query")
    pack_pixels: int | None = Field(None, ge=1, description="queries are mosaics of the pool's images of at most "
                                                          "this many pixels (imgsteal.attack.packing)")
    style_set: str | None = Field(None, description="[style] the style images S_X")
    size: int = Field(64, ge=16, description="[style] working resolution of the copies")
    surrogate: dict[str, Any] = Field(default_factory=dict, description="surrogate settings (network sizes, lr, ...)")
    device: str = "auto"


def budgets_up_to(budget: int) -> list[int]:
    """1, 2, 4, ... below `budget`, then `budget` itself."""
    out, b = [], 1
    while b < budget:
        out.append(b)
        b *= 2
    return out + [budget]


def audit_experiment(cfg: AuditConfig):
    """The audit as an ExperimentConfig (one task, grid: attacks x budgets x seeds, fraction 1.0)."""
    from imgsteal.experiments.config import ExperimentConfig
    from imgsteal.pipeline.oracle import is_url

    scale = victim_scale(cfg)
    kind = "sr" if scale > 1 else "style"
    if kind == "style" and not cfg.style_set:
        raise ImgstealError("a style-transfer victim needs --style-set (the style images, for the report's FID)")
    # The harvest stops at the largest budget: a pool larger than it is sampled, not sent whole (a paid API).
    harvest: dict[str, Any] = {"inputs": cfg.inputs, "oracle": "local", "pack_pixels": cfg.pack_pixels,
                               "budget": cfg.budget}
    surrogate: dict[str, Any] = {"steps": cfg.steps or DEFAULT_STEPS[kind], **cfg.surrogate}
    if kind == "sr":
        harvest["downscale"] = scale
    else:
        harvest["resize"] = cfg.size
        surrogate.setdefault("size", cfg.size)
    if is_url(cfg.victim):
        shown, victim = cfg.victim, {"url": cfg.victim, "scale": scale, "api_spec": cfg.api_spec}
    else:
        path = Path(cfg.victim)
        shown, victim = (path.parent.name if path.name == "model.safetensors" else path.name), {"model": str(cfg.victim)}
    task = {"name": "victim", "title": f"audit of {shown}", "kind": kind, "device": cfg.device,
            "victim": victim, "harvest": harvest, "surrogate": surrogate,
            "test_sets": cfg.test_sets, "evaluation": {"metric": "ssim", "gallery_images": 2}}
    if cfg.style_set:
        task["style_set"] = cfg.style_set
    return ExperimentConfig.model_validate({
        "name": "audit", "description": f"How many queries a copy of {cfg.victim} costs, for {', '.join(cfg.attacks)}.",
        "price_usd": cfg.price_usd,
        "grid": {"fractions": [1.0], "augmentations": ["none"], "seeds": cfg.seeds, "attacks": cfg.attacks,
                 "budgets": budgets_up_to(cfg.budget), "selections": [cfg.selection]},
        "tasks": [task]})


def victim_scale(cfg: AuditConfig) -> int:
    """The victim's upscaling factor (1: style transfer): from its model's contract, the config, or an
    imgsteal API's /v1/info."""
    from imgsteal.pipeline.oracle import is_url

    if not is_url(cfg.victim):
        if cfg.api_spec is not None or cfg.scale is not None:
            raise ImgstealError("--api-spec and --scale describe a victim reached by URL; a model file says its own scale")
        from imgsteal.victim.inference import load_translator

        return load_translator(cfg.victim, "cpu").scale  # reads the contract: its kind and scale
    if cfg.scale is not None:
        return cfg.scale
    if cfg.api_spec is not None:
        raise ImgstealError("a third-party API does not say its scale: give --scale (1 for style transfer)")
    from imgsteal.pipeline.oracle import open_oracle

    with open_oracle(cfg.victim) as oracle:
        return int(oracle.info()["scale"])


def run_audit(cfg: AuditConfig, out: str | Path, progress: bool = True, log=print):
    """Run (or continue) the audit into `out`; returns the ExperimentRun (report: out/report.html)."""
    from imgsteal.experiments.runner import run_experiment

    return run_experiment(audit_experiment(cfg), out, progress=progress, log=log)
