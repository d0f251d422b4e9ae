"""Query selection: which of its own images the adversary sends, within a budget of queries.

- `random`: a seeded random sample of the pool.
- `diverse`: greedy k-center on descriptors the adversary computes from its own images (no model,
  no download): the next image is always the one farthest from everything chosen so far, so a small
  budget covers the pool's variety of colours and textures instead of its most common kind.
- `adaptive`: queries in rounds. The first round is diverse; after each round an ensemble of small
  surrogates (different seeds) is trained on the pairs answered so far, and the next round takes the
  unqueried images on which they disagree most (per-pixel variance of their outputs): where the
  answers so far leave the victim's function least determined.

Only images handed to the query function count against the budget, and every check (budget, strategy,
unreadable files) happens before the first query. `select_queries` works with any query function;
`harvest_io` makes one that sends through an Oracle into a PairStore, as `imgsteal harvest` does.

Descriptor (why not a random CNN): an 8 x 8 colour thumbnail (layout and palette) plus
magnitude-weighted gradient-orientation histograms on a 2 x 2 grid (edges and texture: what
super-resolution and style networks act on) and the mean gradient magnitude (how much texture). It
is deterministic, cheap on a CPU and says what it measures; a randomly initialised CNN's features
depend on its seed and mostly re-encode the same colour and edge statistics less legibly.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from imgsteal.data.images import ImageReadError, load_image, skip_unreadable
from imgsteal.errors import ImgstealError

if TYPE_CHECKING:
    from imgsteal.attack.oracle import Oracle
    from imgsteal.data.pairs import PairStore

Strategy = Literal["random", "diverse", "adaptive"]
STRATEGIES: tuple[str, ...] = ("random", "diverse", "adaptive")

Pair = tuple[torch.Tensor, torch.Tensor]
# Query the oracle with these pool files (in order); one (query sent, answer) per file, None if it failed.
QueryFn = Callable[[Sequence[Path]], Sequence["Pair | None"]]
# The query image the adversary sends for a pool file (e.g. a bicubic-downscaled copy for SR).
PrepareFn = Callable[[Path], torch.Tensor]


@dataclass
class SelectionResult:
    """What a selection sent. queried: images handed to the query function (the budget spent)."""

    strategy: str
    budget: int
    queried: list[Path] = field(default_factory=list)  # in query order
    rounds: list[list[Path]] = field(default_factory=list)
    answered: int = 0
    failed: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)  # pool files skipped before any query
    duplicates: int = 0  # pool files whose query image repeats an earlier one (never sent twice)
    disagreement: list[float] = field(default_factory=list)  # adaptive: score of each image picked by disagreement

    @property
    def spent(self) -> int:
        return len(self.queried)


# --------------------------------------------------------------------------- the adversary's descriptor


def descriptor(image: torch.Tensor, thumbnail: int = 8, bins: int = 8) -> torch.Tensor:
    """Feature vector of one 3 x H x W image in [0, 1]: colour thumbnail (3 thumbnail^2 values), 2 x 2
    grid of magnitude-weighted gradient-orientation histograms (4 bins values, each cell's summing to 1)
    and the mean gradient magnitude. Each block is scaled to unit norm so each weighs the same."""
    x = image.float().clamp(0, 1)[None]
    thumb = F.adaptive_avg_pool2d(x, thumbnail).flatten()
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    gx = F.pad(gray[..., :, 2:] - gray[..., :, :-2], (1, 1, 0, 0))
    gy = F.pad(gray[..., 2:, :] - gray[..., :-2, :], (0, 0, 1, 1))
    magnitude = torch.sqrt(gx**2 + gy**2)[0, 0]
    angle = torch.atan2(gy, gx)[0, 0] % math.pi  # unsigned orientation in [0, pi)
    index = (angle / math.pi * bins).long().clamp_(0, bins - 1)
    h, w = magnitude.shape
    histograms = []
    for rows in (slice(0, h // 2 or 1), slice(h // 2, h)):
        for cols in (slice(0, w // 2 or 1), slice(w // 2, w)):
            m, i = magnitude[rows, cols].flatten(), index[rows, cols].flatten()
            hist = torch.zeros(bins).index_add_(0, i, m)
            histograms.append(hist / hist.sum().clamp_min(1e-8))
    hog = torch.cat(histograms)
    energy = magnitude.mean().reshape(1)

    def unit(v: torch.Tensor) -> torch.Tensor:
        return v / v.norm().clamp_min(1e-8)

    return torch.cat([unit(thumb - thumb.mean()), unit(hog), energy * 4])


def k_center_greedy(features: torch.Tensor, k: int, *, chosen: Sequence[int] = (), first: int = 0) -> list[int]:
    """Greedy k-center (Gonzalez 1985): `k` new row indices of `features` (N x D), each the row farthest
    (Euclidean) from all rows chosen before it; starts from `chosen` or, without any, from row `first`.
    A 2-approximation of the smallest covering radius; ties go to the lowest index."""
    n = features.shape[0]
    if k > n - len(chosen):
        raise ValueError(f"cannot choose {k} more of {n} rows with {len(chosen)} chosen")
    picked: list[int] = []
    if not chosen:
        picked.append(first)
        k -= 1
    anchors = list(chosen) + picked
    if k <= 0:
        return picked
    distance = torch.cdist(features, features[anchors]).min(dim=1).values
    for _ in range(k):
        distance[list(chosen) + picked] = -1.0
        nxt = int(torch.argmax(distance))
        picked.append(nxt)
        distance = torch.minimum(distance, torch.cdist(features, features[nxt : nxt + 1])[:, 0])
    return picked


# --------------------------------------------------------------------------- adaptive: small surrogate ensembles


def small_surrogate(scale: int, seed: int) -> nn.Module:
    """A quick surrogate for disagreement scores: a 2-block, 16-channel EDSR for `scale` >= 2, a
    2-block ResNet generator (ngf 8, instance norm) for same-size translation."""
    from imgsteal.models import build_model

    torch.manual_seed(seed)
    if scale >= 2:
        import imgsteal.models.edsr  # noqa: F401  (registers "edsr")

        return build_model("edsr", scale=scale, n_blocks=2, channels=16)
    return build_model("resnet_generator", ngf=8, n_blocks=2, norm="instance")


def _random_crops(pairs: list[Pair], scale: int, crop: int, count: int, gen: torch.Generator) -> Pair:
    xs, ys = [], []
    for _ in range(count):
        x, y = pairs[int(torch.randint(len(pairs), (), generator=gen))]
        c = min(crop, x.shape[-2], x.shape[-1])
        top = int(torch.randint(0, x.shape[-2] - c + 1, (), generator=gen))
        left = int(torch.randint(0, x.shape[-1] - c + 1, (), generator=gen))
        xs.append(x[:, top : top + c, left : left + c])
        ys.append(y[:, top * scale : (top + c) * scale, left * scale : (left + c) * scale])
    side = min(t.shape[-1] for t in xs)  # pairs smaller than `crop` shrink the whole batch
    return (torch.stack([t[:, :side, :side] for t in xs]),
            torch.stack([t[:, : side * scale, : side * scale] for t in ys]))


def train_small(model: nn.Module, pairs: list[Pair], scale: int, steps: int, seed: int, crop: int = 24,
                batch: int = 8, lr: float = 1e-3) -> nn.Module:
    """Fit `model` to `pairs` by MSE on random crops (Adam, `steps` steps); returns it in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        x, y = _random_crops(pairs, scale, crop, batch, gen)
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def disagreement(models: Sequence[nn.Module], images: Sequence[torch.Tensor], max_side: int = 64) -> torch.Tensor:
    """Per image: mean over pixels of the variance across `models`' outputs (on a centre crop of at most
    max_side px, for speed). Higher = the ensemble knows less what the victim would answer there."""
    scores = []
    for image in images:
        h, w = image.shape[-2:]
        ch, cw = min(h, max_side), min(w, max_side)
        top, left = (h - ch) // 2, (w - cw) // 2
        x = image[None, :, top : top + ch, left : left + cw].float()
        outputs = torch.stack([m(x) for m in models])
        scores.append(float(outputs.var(dim=0, unbiased=False).mean()))
    return torch.tensor(scores)


# --------------------------------------------------------------------------- selection


def load_pool(pool: Sequence[Path], prepare: PrepareFn) -> tuple[list[Path], list[torch.Tensor], list[Path], int]:
    """Prepare every pool file's query image. Unreadable files are skipped with a line naming each;
    files whose query image repeats an earlier one are dropped. Returns (paths, images, unreadable,
    duplicates)."""
    paths, images, unreadable, seen, duplicates = [], [], [], set(), 0
    for path in pool:
        path = Path(path)
        try:
            image = prepare(path)
        except ImageReadError as exc:
            skip_unreadable(path, exc)
            unreadable.append(path)
            continue
        digest = hashlib.sha256(image.mul(255).round().to(torch.uint8).numpy().tobytes()).hexdigest()
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        paths.append(path)
        images.append(image)
    return paths, images, unreadable, duplicates


def round_sizes(budget: int, rounds: int) -> list[int]:
    """Split `budget` queries into at most `rounds` rounds, as evenly as possible, larger ones first."""
    rounds = max(1, min(rounds, budget))
    base, extra = divmod(budget, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def select_queries(
    pool: Sequence[Path],
    budget: int,
    strategy: str,
    query: QueryFn,
    *,
    prepare: PrepareFn = load_image,
    seed: int = 0,
    rounds: int = 4,
    ensemble: int = 3,
    train_steps: int = 60,
    make_surrogate: Callable[[int, int], nn.Module] = small_surrogate,
) -> SelectionResult:
    """Choose and query `budget` images of `pool` with `strategy`; returns what was sent, in order.

    query: sends files to the oracle (see QueryFn; `harvest_io` builds one); called only with chosen
    files, `budget` of them in all. prepare: the query image of a pool file, as sent (descriptors and
    the adaptive ensemble see exactly that). adaptive only: `rounds` rounds, `ensemble` surrogates
    built by make_surrogate(scale, seed), each trained `train_steps` steps per round.
    Raises ImgstealError, before any query, for an unknown strategy, a budget below 1 or above the
    number of readable, distinct pool images.
    """
    if strategy not in STRATEGIES:
        raise ImgstealError(f"unknown query-selection strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ImgstealError(f"the query budget must be a whole number of at least 1 query, got {budget!r}")
    if strategy == "adaptive" and (ensemble < 2 or train_steps < 1 or rounds < 1):
        raise ImgstealError("adaptive selection needs an ensemble of at least 2 surrogates, train_steps >= 1 and rounds >= 1")
    paths, images, unreadable, duplicates = load_pool(pool, prepare)
    result = SelectionResult(strategy, budget, unreadable=unreadable, duplicates=duplicates)
    if budget > len(paths):
        skipped = f" ({len(unreadable)} unreadable, {duplicates} duplicate)" if unreadable or duplicates else ""
        raise ImgstealError(f"a budget of {budget} queries is more than the {len(paths)} usable images in the pool{skipped}; "
                            "lower the budget or add images")

    def send(indices: list[int]) -> list[Pair | None]:
        files = [paths[i] for i in indices]
        answers = list(query(files))
        if len(answers) != len(files):
            raise ImgstealError(f"the query function answered {len(answers)} of {len(files)} queries")
        result.queried += files
        result.rounds.append(files)
        for path, answer in zip(files, answers):
            if answer is None:
                result.failed.append(path)
            else:
                result.answered += 1
        return answers

    gen = torch.Generator().manual_seed(seed)
    if strategy == "random":
        send(torch.randperm(len(paths), generator=gen)[:budget].tolist())
        return result
    features = torch.stack([descriptor(image) for image in images])
    first = int(torch.randint(len(paths), (), generator=gen))
    if strategy == "diverse":
        send(k_center_greedy(features, budget, first=first))
        return result

    sizes = round_sizes(budget, rounds)
    chosen = k_center_greedy(features, sizes[0], first=first)
    pairs = [answer for answer in send(chosen) if answer is not None]
    for round_index, size in enumerate(sizes[1:], start=1):
        taken = set(chosen)
        remaining = [i for i in range(len(paths)) if i not in taken]
        if not pairs:  # nothing answered yet: no ensemble to ask, stay diverse
            picked = k_center_greedy(features, size, chosen=chosen)
        else:
            scale = max(1, pairs[0][1].shape[-1] // pairs[0][0].shape[-1])
            models = [train_small(make_surrogate(scale, seed * 1000 + round_index * 10 + m), pairs, scale,
                                  train_steps, seed=seed * 1000 + round_index * 10 + m) for m in range(ensemble)]
            scores = disagreement(models, [images[i] for i in remaining])
            order = torch.argsort(scores, descending=True, stable=True)[:size].tolist()
            picked = [remaining[j] for j in order]
            result.disagreement += [float(scores[j]) for j in order]
        chosen += picked
        pairs += [answer for answer in send(picked) if answer is not None]
    return result


# --------------------------------------------------------------------------- oracle + pair store


def harvest_io(oracle: "Oracle", store: "PairStore", *, downscale: int | None = None, resize: int | None = None,
               **harvest_options) -> tuple[PrepareFn, QueryFn]:
    """(prepare, query) for select_queries that send exactly what `imgsteal harvest` sends (optionally
    downscaled or resized, PNG) through `oracle` and keep every answer in `store`. harvest_options go
    to attack.harvest.harvest (price, cost, progress). A file already answered in `store` is not
    sent again but is returned (and counted by the selection) like a fresh answer."""
    from imgsteal.attack.harvest import harvest, prepare_query
    from imgsteal.data.images import decode_image, sha256_bytes

    def prepare(path: Path) -> torch.Tensor:
        data, _ = prepare_query(path, downscale, resize)
        return decode_image(data, str(path))

    def query(files: Sequence[Path]) -> list[Pair | None]:
        harvest(oracle, list(files), store, downscale=downscale, resize=resize, **{"progress": False, **harvest_options})
        by_sha = {r.input_sha256: r for r in store.records()}
        answers: list[Pair | None] = []
        for path in files:
            try:
                record = by_sha.get(sha256_bytes(prepare_query(path, downscale, resize)[0]))
            except ImageReadError:
                record = None
            answers.append(store.load_pair(record) if record is not None else None)
        return answers

    return prepare, query
