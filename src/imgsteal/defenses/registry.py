"""Output defences by name: `imgsteal serve --defense NAME`, the local oracle and `defense evaluate`.

Each defence declares a pydantic options model; on the command line its fields are flags named
`--<defence>-<field>` (e.g. --watermark-fraction, --pgd-epsilon), here `<defence>_<field>`.
Several defences combine in the order given (e.g. watermark, then fingerprint on every answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imgsteal.errors import ImgstealError


class FingerprintOptions(BaseModel):
    """Settings of the fingerprint defence."""

    model_config = ConfigDict(extra="forbid")

    model: Path = Field(description="run folder of `imgsteal fingerprint train` (networks + the secret fingerprint)")
    device: str = "cpu"


def _watermark(options):
    from imgsteal.defenses.watermark import WatermarkDefense

    return WatermarkDefense(options)


def _fingerprint(options: FingerprintOptions):
    from imgsteal.defenses.fingerprint import FingerprintDefense, FingerprintModel

    return FingerprintDefense(FingerprintModel.load(options.model, options.device))


def _pgd(options):
    from imgsteal.defenses.perturbation import PGDDefense

    return PGDDefense(options)


def _watermark_options() -> type[BaseModel]:
    from imgsteal.defenses.watermark import WatermarkOptions

    return WatermarkOptions


def _pgd_options() -> type[BaseModel]:
    from imgsteal.defenses.perturbation import PGDOptions

    return PGDOptions


@dataclass(frozen=True)
class DefenseSpec:
    """A named defence: its options model (loaded lazily), its factory, and one line of help."""

    name: str
    options_model: Callable[[], type[BaseModel]]
    factory: Callable[[Any], Any]
    summary: str


DEFENSES: dict[str, DefenseSpec] = {
    "watermark": DefenseSpec("watermark", _watermark_options, _watermark,
                             "DAWN-style: alter a keyed-HMAC-selected fraction of each client's answers, keep them as triggers"),
    "fingerprint": DefenseSpec("fingerprint", lambda: FingerprintOptions, _fingerprint,
                               "stamp every answer with the owner's steganographic fingerprint"),
    "pgd": DefenseSpec("pgd", _pgd_options, _pgd,
                       "add a PGD perturbation (L-inf) against the victim's discriminator to every answer"),
}


# The `<defence>_<field>` options `imgsteal serve` exposes as flags (and the server launcher passes on).
SERVE_FLAGS = ("watermark_db", "watermark_fraction", "watermark_alteration", "watermark_blur_sigma", "watermark_text",
               "fingerprint_model", "pgd_discriminator", "pgd_module", "pgd_epsilon", "pgd_steps", "pgd_step_size",
               "pgd_target")


def defense_names() -> list[str]:
    return list(DEFENSES)


def _spec(name: str) -> DefenseSpec:
    if name not in DEFENSES:
        raise ImgstealError(f"unknown defence {name!r}; known: {', '.join(DEFENSES)}")
    return DEFENSES[name]


def defense_options(name: str, options: Mapping[str, Any] | BaseModel) -> BaseModel:
    """Validate `options` for defence `name`; raises ImgstealError with the defence's flag names."""
    spec = _spec(name)
    model = spec.options_model()
    if isinstance(options, model):
        return options
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(f"--{name}-{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                             for e in exc.errors())
        raise ImgstealError(f"defence {name!r}: {problems}") from None


def build_defense(name: str, options: Mapping[str, Any] | BaseModel):
    """One Defense object (see imgsteal.victim.server.Defense) from its name and options."""
    return _spec(name).factory(defense_options(name, options))


def option_flags() -> list[str]:
    """Every `<defence>_<field>` flag name (what `imgsteal serve` and the server launcher accept)."""
    return [f"{name}_{field}" for name, spec in DEFENSES.items() for field in spec.options_model().model_fields]


def split_flags(names: Sequence[str], flags: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """`{defence}_{field}: value` flags (None = not given) -> per chosen defence, its options dict.

    defaults: values used when a flag is not given (e.g. the device, a database path next to --db).
    A flag given for a defence that is not chosen is an error: it would silently do nothing.
    """
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        _spec(name)
    merged = {k: v for k, v in (defaults or {}).items() if v is not None}
    given = {k: v for k, v in flags.items() if v is not None}
    per: dict[str, dict] = {name: {} for name in chosen}
    for key, value in given.items():
        name = next((n for n in DEFENSES if key.startswith(n + "_")), None)
        if name is None:
            raise ImgstealError(f"unknown defence option {key!r}")
        if name not in per:
            raise ImgstealError(f"--{key.replace('_', '-')} is set but --defense {name} is not")
    for name in chosen:
        fields = DEFENSES[name].options_model().model_fields
        for field in fields:
            key = f"{name}_{field}"
            if key in given:
                per[name][field] = given[key]
            elif key in merged:
                per[name][field] = merged[key]
    return per


def build_defenses(names: Sequence[str], flags: Mapping[str, Any] | None = None,
                   defaults: Mapping[str, Any] | None = None) -> list:
    """Defense objects for `names`, in order, from `<defence>_<field>` flags (see split_flags)."""
    per = split_flags(names, flags or {}, defaults)
    return [build_defense(name, options) for name, options in per.items()]
