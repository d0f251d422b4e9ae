"""`imgsteal watermark verify|clients|train|calibrate`: the owner checks a suspect model against a client's trigger
set (DAWN), or trains, calibrates and verifies the box-free watermark (`--method boxfree`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from imgsteal.cli._common import UserError, user_errors
from imgsteal.cli.serve import DEFAULT_DB

watermark_app = typer.Typer(help="DAWN-style watermark: trigger sets recorded by `imgsteal serve --defense watermark`.",
                            no_args_is_help=True)

DEFAULT_TRIGGERS = DEFAULT_DB.with_name(DEFAULT_DB.stem + "-watermark.sqlite")  # what `imgsteal serve` uses next to --db
TRIGGERS_OPTION = typer.Option(DEFAULT_TRIGGERS, envvar="IMGSTEAL_WATERMARK_DB",
                               help="the watermark database of the service (HMAC secret and trigger sets)")


@watermark_app.command("verify")
def verify(
    suspect: str = typer.Option(..., help="the suspect model: a checkpoint or run folder, or the http(s):// URL of its API"),
    client: Optional[str] = typer.Option(None, help="API key name of the client whose trigger set is checked (dawn; required there)"),
    method: str = typer.Option("dawn", help="dawn: a client's trigger set; boxfree: the box-free mark (needs --model)"),
    model: Optional[Path] = typer.Option(None, envvar="IMGSTEAL_BOXFREE_MODEL",
                                         help="boxfree: run folder of `imgsteal watermark train --method boxfree`"),
    triggers: Path = TRIGGERS_OPTION,
    api_key: Optional[str] = typer.Option(None, envvar="IMGSTEAL_SUSPECT_API_KEY", help="API key for a suspect URL"),
    alpha: float = typer.Option(0.01, help="significance level: of the one-sided binomial test (dawn), of the decoy-key "
                                           "rank test (boxfree): innocent models are accused at most this often"),
    decoys: Optional[int] = typer.Option(None, help="boxfree: decoy keys of the rank test (default: as trained, 999; at "
                                                    "least 1 / alpha - 1; on one CPU core about 0.35 s each for 64 queries "
                                                    "of 128 px)"),
    reference: Optional[List[str]] = typer.Option(
        None, help="an independent model (checkpoint, run folder or URL) the suspect must beat on each trigger (URLs are queried without a key); repeatable. "
                   "With k references the null match rate is 1/(k+1)"),
    closeness: float = typer.Option(0.5, help="a trigger matches only if the suspect's MSE to the altered answer is at most "
                                              "this multiple of the altered answer's MSE to the clean one"),
    device: str = typer.Option("auto", help="where a suspect checkpoint runs: auto (cuda if present), cpu, cuda, cuda:1 ..."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the verdict as JSON (counts and distances, no images)"),
) -> None:
    """Send the client's trigger inputs to the suspect: does it reproduce the altered answers, beyond what
    a blurry or weak independent model (and every --reference model) does?"""
    with user_errors():
        from imgsteal.defenses.verify import open_suspect, verify_watermark

        if _other_method(method, suspect, model, reference, api_key, device, json_out, alpha, decoys):
            return
        if client is None:
            from imgsteal.errors import ImgstealError

            raise ImgstealError("--client is required with --method dawn (the API key name whose trigger set is checked)")
        references = [open_suspect(spec, None, device) for spec in reference or []]  # never send the suspect's key elsewhere
        verdict = verify_watermark(triggers, client, open_suspect(suspect, api_key, device), suspect_name=suspect, alpha=alpha,
                                   references=references, closeness=closeness)
        typer.echo(verdict.summary())
        if verdict.resized:
            typer.echo(f"note: {verdict.resized} answers had another size than the stored ones and were resized", err=True)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(verdict.as_dict(with_distances=True), indent=2))


@watermark_app.command("clients")
def clients(triggers: Path = TRIGGERS_OPTION) -> None:
    """How many triggers each client has (counts only)."""
    with user_errors():
        from imgsteal.defenses.watermark import TriggerStore
        from imgsteal.errors import ImgstealError

        if not triggers.exists():
            raise ImgstealError(f"no watermark trigger database at {triggers}")
        with TriggerStore(triggers, create=False) as store:
            names = store.clients()
            if not names:
                typer.echo("no triggers recorded yet")
            for name in names:
                typer.echo(f"{name}\t{store.count(name)} triggers")


# -- box-free watermark (Zhang et al. 2020): train, calibrate, verify -----------------------------
METHOD_OPTION = typer.Option("boxfree", help="watermark method: boxfree (the DAWN watermark needs no training)")


def _check_boxfree(method: str) -> None:
    from imgsteal.errors import ImgstealError

    if method != "boxfree":
        raise ImgstealError(f"unknown method {method!r} here: only boxfree is trained/calibrated (dawn needs neither)")


def _other_method(method: str, suspect: str, model: Optional[Path], reference: Optional[List[str]], api_key: Optional[str],
                  device: str, json_out: Optional[Path], alpha: float, decoys: Optional[int]) -> bool:
    """`verify --method boxfree`: runs it and returns True; False for dawn; an error for anything else."""
    from imgsteal.errors import ImgstealError

    if method == "dawn":
        return False
    if method != "boxfree":
        raise ImgstealError(f"unknown --method {method!r}; known: dawn, boxfree")
    if model is None:
        raise ImgstealError("--method boxfree needs --model (the run folder of `imgsteal watermark train --method boxfree`)")
    if reference:
        raise ImgstealError("--method boxfree takes no --reference: its decoy-key rank test accuses an innocent model at "
                            "most alpha of the time without any; check independent models with `imgsteal watermark "
                            "calibrate --method boxfree`")
    from imgsteal.defenses.boxfree import BoxfreeModel, verify_boxfree
    from imgsteal.defenses.verify import open_suspect

    owner = BoxfreeModel.load(model, device)
    verdict = verify_boxfree(owner, open_suspect(suspect, api_key, device), suspect_name=suspect, alpha=alpha,
                             decoys=decoys, progress=True)
    typer.echo(verdict.summary())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(verdict.as_dict(), indent=2))
    return True


@watermark_app.command("train")
def train(
    images: List[str] = typer.Option(..., help="folder or dataset spec of victim inputs (repeatable); the answers are the "
                                               "victim's outputs on crops of them (the images themselves without --victim)"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder (0700: networks, the secret key and mark, queries)"),
    method: str = METHOD_OPTION,
    victim: Optional[str] = typer.Option(None, help="the victim checkpoint or run folder whose answers are marked"),
    mark: str = typer.Option("auto", help="mark image file, or auto for a fresh random secret mark"),
    size: int = typer.Option(64, help="answer crop side, px (a multiple of the victim's scale)"),
    mark_size: int = typer.Option(32, help="side of the mark image, px"),
    queries: int = typer.Option(64, help="verification queries kept in the run folder (every suspect is asked them)"),
    query_size: Optional[int] = typer.Option(None, help="answer side of the verification queries, px (default: the "
                                                        "larger of --size and 128, at most the smallest image)"),
    steps: int = typer.Option(600, help="stage-1 steps (embedder, extractor, discriminator)"),
    surrogates: int = typer.Option(2, help="stage 2: surrogates trained on marked answers"),
    negatives: int = typer.Option(4, help="stage 2: models trained on clean answers"),
    surrogate_steps: int = typer.Option(300, help="steps of each stage-2 / calibration model"),
    finetune_steps: int = typer.Option(300, help="stage 2: extractor fine-tuning steps"),
    extractor: str = typer.Option("matched", help="matched (a matched filter scales the mark) or learned (a small CNN draws it)"),
    calibration_models: int = typer.Option(10, help="independent clean-answer models the decision is checked on "
                                                   "(0: check later with `watermark calibrate`)"),
    decoys: int = typer.Option(999, help="decoy keys of the rank test (verification's default; at least 1 / 0.01 - 1)"),
    batch_size: int = typer.Option(16),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
    resume: bool = typer.Option(False, help="continue a killed stage 1 from its last checkpoint"),
) -> None:
    """Train the box-free watermark (stage 1, stage 2 with surrogates) and check it on independent models."""
    with user_errors():
        _check_boxfree(method)
        from imgsteal.defenses.boxfree import BoxfreeTrainConfig, train_boxfree
        from imgsteal.errors import ImgstealError

        if extractor not in ("matched", "learned"):
            raise ImgstealError(f"--extractor must be matched or learned, not {extractor!r}")

        cfg = BoxfreeTrainConfig(images=images, victim=victim, mark=mark, size=size, mark_size=mark_size, queries=queries,
                                 query_size=query_size, steps=steps,
                                 surrogates=surrogates, negatives=negatives, surrogate_steps=surrogate_steps,
                                 finetune_steps=finetune_steps, calibration_models=calibration_models, decoys=decoys,
                                 extractor=extractor,
                                 batch_size=batch_size, seed=seed, device=device)
        result = train_boxfree(cfg, out, resume=resume)
        typer.echo(result.summary())
        typer.echo(f"networks, secret key and mark, verification queries in {out} (owner-only)")


@watermark_app.command("calibrate")
def calibrate(
    model: Path = typer.Option(..., help="run folder of `imgsteal watermark train --method boxfree`"),
    reference: List[str] = typer.Option(..., help="an independent model (checkpoint, run folder or URL) trained on clean "
                                                  "answers, never the suspect; repeatable"),
    method: str = METHOD_OPTION,
    alpha: Optional[float] = typer.Option(None, help="level of the rank test the references are verified at (default: as trained)"),
    decoys: Optional[int] = typer.Option(None, help="decoy keys of the rank test (default: as trained)"),
    device: str = typer.Option("auto", help="where reference checkpoints run: auto, cpu, cuda ..."),
) -> None:
    """Check the box-free decision on independent models: how many the rank test accuses (stored in the run folder)."""
    with user_errors():
        _check_boxfree(method)
        from imgsteal.defenses.boxfree import BoxfreeModel, calibrate_boxfree
        from imgsteal.defenses.verify import open_suspect

        owner = BoxfreeModel.load(model, device)
        record = calibrate_boxfree(owner, {spec: open_suspect(spec, None, device) for spec in dict.fromkeys(reference)},
                                   alpha, decoys, progress=True)
        for name, p in record["p_values"].items():
            typer.echo(f"{name}: carries {record['shares'][name]:.1%} of the residual, p = {p:.4f}")
        typer.echo(f"{record['false_positives']} of {record['models']} independent models accused at alpha "
                   f"{record['alpha']} (expected about {record['alpha'] * record['models']:.2f}; the rank test's rate "
                   "is alpha by construction)")


def register(app: typer.Typer) -> None:
    app.add_typer(watermark_app, name="watermark")
