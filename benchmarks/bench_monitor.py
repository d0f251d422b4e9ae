"""Extraction monitor (`imgsteal serve --monitor`) on simulated traffic, and its cost in throughput.

Detection: a server subprocess on 127.0.0.1 with the monitor on (policy log) answers simulated
clients (one HTTP client, requests in a random interleaving of the keys; each key's own order kept).
All queries are super-resolution queries: photos bicubic-downscaled 4x, as `imgsteal harvest` sends
them. Images come from the bundled demo data only.

- benign, casual: --casual keys with 1-8 photos each from the victim, benchmark, painting and SR
  benchmark photos (never the attacker's), some as crops or brightness variants, some sent twice;
- benign, albums: heavy users with an album of similar photos (crops of 70-95%, brightness
  +-15%, flips of 3-5 base photos; 60, 120 and 200 queries);
- benign, diverse power user (reported apart, not in the false-positive rate: it is what the
  distinct test flags by design): 40 different photos from one key;
- benign, collages: --collages keys sending 1-3 collages each (2-4 photos in a grid with white
  borders, as phone apps make them);
- benign, team accounts (reported apart, like the power user): --teams accounts of 5 casual keys;
- attackers: the harvest of `demo:attacker` (59 photos, one key); the same photos packed into
  512 x 512 mosaics (2 requests, one key; imgsteal.attack.packing); few-shot attackers (1-4 of
  those photos, 4 keys); the harvest spread over 3 and over 6 keys, each set once of one account
  and once of as many accounts as keys.

Keys of an account are watched together as well as each on its own (`imgsteal keys create
--account`); every other key is its own account.

The alerts are read back from the query log (`monitor` column). The PRADA normality statistic
(Shapiro-Wilk W of each key's nearest-query distances) is printed per class too, computed offline
on the same features, to show why that test is off by default.

Throughput: the same server without and with the monitor (policy log), --clients closed-loop
clients on distinct photos, rounds alternating; the ratio of the medians (goal >= 0.90).

    python benchmarks/bench_monitor.py                 # about 8 minutes on 2 busy cores
    python benchmarks/bench_monitor.py --rounds 5 --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from imgsteal.data.images import bicubic_downscale, decode_image, encode_png, load_image
from imgsteal.data.layouts import resolve_images
from imgsteal.attack.packing import compose, shelf_pack
from imgsteal.defenses.monitor import MonitorConfig, mosaic_tiles, query_features, query_image_features, shapiro_w
from imgsteal.models import build_model
from imgsteal.train.checkpoint import save_checkpoint
from imgsteal.victim.launch import running_server

SCALE = 4
BENIGN_SPECS = ["demo:victim_photos", "demo:benchmark_photos", "demo:paintings", "demo:sr_benchmark"]


def lr(image: torch.Tensor) -> bytes:
    """A super-resolution query: the image bicubic-downscaled SCALE x, as PNG."""
    return encode_png(bicubic_downscale(image.clamp(0, 1), SCALE))


def collage(images: list[torch.Tensor], side: int = 96, border: int = 4) -> torch.Tensor:
    """2-4 photos, each resized to side x side, in a 2-column grid on white with `border` px between."""
    cells = [torch.nn.functional.interpolate(x[None], size=(side, side), mode="area")[0] for x in images]
    rows = (len(cells) + 1) // 2
    out = torch.ones(3, rows * (side + border) + border, 2 * (side + border) + border)
    for i, cell in enumerate(cells):
        top, left = border + (i // 2) * (side + border), border + (i % 2) * (side + border)
        out[:, top:top + side, left:left + side] = cell
    return out


def packed(images: list[torch.Tensor], max_pixels: int = 512 * 512) -> list[bytes]:
    """SR queries of the images, shelf-packed into mosaics of at most max_pixels, as PNG (one a request)."""
    small = [bicubic_downscale(x.clamp(0, 1), SCALE) for x in images]
    return [encode_png(compose(layout, small)) for layout in shelf_pack([(x.shape[-1], x.shape[-2]) for x in small], max_pixels)]


def variant(image: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """A crop of 70-95% of each side, brightness x 0.85-1.15, maybe mirrored: another shot of the same scene."""
    h, w = image.shape[-2:]
    f = rng.uniform(0.7, 0.95)
    ch, cw = int(h * f), int(w * f)
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    out = image[:, top:top + ch, left:left + cw] * rng.uniform(0.85, 1.15)
    return out.flip(-1) if rng.random() < 0.3 else out


def traffic(args, rng: random.Random) -> tuple[dict[str, list[bytes]], dict[str, str], dict[str, str]]:
    """key name -> its queries (in order), key name -> class, key name -> account (keys of an account only)."""
    benign = [p for spec in BENIGN_SPECS for p in resolve_images(spec)]
    attacker = resolve_images("demo:attacker")
    cache: dict[Path, torch.Tensor] = {}

    def img(path: Path) -> torch.Tensor:
        if path not in cache:
            cache[path] = load_image(path)
        return cache[path]

    keys: dict[str, list[bytes]] = {}
    kind: dict[str, str] = {}
    account: dict[str, str] = {}
    for i in range(args.casual):
        photos = rng.sample(benign, rng.randint(1, 8))
        queries = []
        for p in photos:
            queries.append(lr(img(p) if rng.random() < 0.6 else variant(img(p), rng)))
            if rng.random() < 0.15:  # sent again (a retry, or a second look)
                queries.append(queries[-1])
        keys[f"casual{i:03d}"], kind[f"casual{i:03d}"] = queries, "benign: casual (1-8 photos)"
    for i, n in enumerate((60, 120, 200)):
        bases = rng.sample(benign, rng.randint(3, 5))
        keys[f"album{i}"] = [lr(variant(img(rng.choice(bases)), rng)) for _ in range(n)]
        kind[f"album{i}"] = "benign: album of similar photos"
    for i in range(args.collages):
        keys[f"collage{i:02d}"] = [encode_png(collage([img(p) for p in rng.sample(benign, rng.randint(2, 4))]))
                                   for _ in range(rng.randint(1, 3))]
        kind[f"collage{i:02d}"] = "benign: 1-3 collages of 2-4 photos"
    for t in range(args.teams):
        for member in range(5):
            name = f"team{t:02d}_{member}"
            keys[name] = [lr(img(p) if rng.random() < 0.6 else variant(img(p), rng))
                          for p in rng.sample(benign, rng.randint(1, 8))]
            kind[name], account[name] = "benign: a key of a team account (5 casual keys)", f"team{t:02d}"
    keys["power"] = [lr(img(p)) for p in rng.sample(benign, 40)]
    kind["power"] = "benign: 40 different photos (flagged by design)"
    harvest = [lr(img(p)) for p in rng.sample(attacker, len(attacker))]  # in a random order per draw
    keys["harvest"], kind["harvest"] = harvest, "attack: harvest, one key"
    keys["packed"] = packed([img(p) for p in rng.sample(attacker, len(attacker))])
    kind["packed"] = "attack: harvest in 512 px mosaics, one key"
    for i in range(4):
        keys[f"fewshot{i}"] = [lr(img(p)) for p in rng.sample(attacker, i + 1)]
        kind[f"fewshot{i}"] = "attack: few-shot (1-4 queries)"
    for parts in (3, 6):
        for j in range(parts):
            name = f"spread{parts}_{j}"
            keys[name], kind[name] = harvest[j::parts], f"attack: harvest over {parts} keys, {parts} accounts"
            name = f"account{parts}_{j}"
            keys[name], kind[name] = harvest[j::parts], f"attack: harvest over {parts} keys of one account"
            account[name] = f"attacker{parts}"
    return keys, kind, account


def interleaved(keys: dict[str, list[bytes]], rng: random.Random) -> list[tuple[str, int]]:
    """(key name, index of its query) for every query, keys interleaved at random, each key's order kept."""
    order = [name for name, qs in keys.items() for _ in qs]
    rng.shuffle(order)
    position = dict.fromkeys(keys, 0)
    out = []
    for name in order:
        out.append((name, position[name]))
        position[name] += 1
    return out


def send_all(url: str, tokens: dict[str, str], keys: dict[str, list[bytes]], rng: random.Random) -> int:
    """Every key's queries, interleaved at random (each key's order kept); returns non-200 answers."""
    bad = 0
    with httpx.Client(base_url=url, timeout=120) as http:
        for name, j in interleaved(keys, rng):
            data = keys[name][j]
            r = http.post("/v1/translate", content=data,
                          headers={"Authorization": f"Bearer {tokens[name]}", "Content-Type": "image/png"})
            bad += r.status_code != 200
    return bad


def replay(seeds: range, casual: int, collages: int, teams: int) -> None:
    """The same traffic classes for other seeds, straight into an in-process monitor (no server): how
    stable the rates are across draws of the benign traffic."""
    from imgsteal.defenses.monitor import ExtractionMonitor

    totals: dict[str, list] = {}
    for seed in seeds:
        keys, kind, account = traffic(argparse.Namespace(casual=casual, collages=collages, teams=teams, seed=seed),
                                      random.Random(seed))
        monitor = ExtractionMonitor(MonitorConfig())
        ids = {name: i for i, name in enumerate(keys)}
        members: dict[str, list[str]] = {}
        for name, acct in account.items():
            members.setdefault(acct, []).append(name)
        sent: dict[str, int] = {}  # an account's queries so far
        share_at: dict[str, float] = {}  # key -> share of its queries (of its account's, if the account was flagged)
        for name, j in interleaved(keys, random.Random(seed)):
            acct = account.get(name)
            if acct:
                sent[acct] = sent.get(acct, 0) + 1
            for alert in monitor.observe(ids[name], name, query_image_features(decode_image(keys[name][j])), acct):
                if alert.account:
                    total = sum(len(keys[n]) for n in members[acct])
                    for n in members[acct]:
                        share_at.setdefault(n, sent[acct] / total)
                else:
                    share_at.setdefault(name, (j + 1) / len(keys[name]))
        for name in keys:
            t = totals.setdefault(kind[name], [0, 0, []])
            t[0] += 1
            if name in share_at:
                t[1] += 1
                t[2].append(share_at[name])
    print(f"replay of seeds {seeds.start}-{seeds.stop - 1} in-process ({casual} casual and {collages} collage keys, "
          f"{teams} team accounts each):")
    for c, (n, flagged, shares) in totals.items():
        latest = f", alert at <= {max(shares):.0%} of the key's queries (of its account's, if flagged as one)" if shares else ""
        print(f"  {c:<50} {flagged}/{n} keys flagged{latest}")


def detection(model: Path, work: Path, args) -> bool:
    rng = random.Random(args.seed)
    keys, kind, account = traffic(args, rng)
    settings = dict(rate_per_s=0, monitor=True, monitor_policy="log")
    started = time.perf_counter()
    with running_server(model, work / "detect.sqlite", workdir=work / "detect", **settings) as server:
        tokens = {name: server.create_key(name, account.get(name)) for name in keys}
        bad = send_all(server.url, tokens, keys, rng)
        rows = server.queries()
    seconds = time.perf_counter() - started
    alert_at: dict[str, int] = {}  # key -> its query that raised its own alert
    seen: dict[str, int] = {}
    account_at: dict[str, int] = {}  # account -> its keys' queries (together) when the account's alert came
    account_seen: dict[str, int] = {}
    for row in rows:
        name, label = row["key_name"], row["monitor"] or ""
        seen[name] = seen.get(name, 0) + 1
        if label and "account=" not in label.split("; ")[0] and name not in alert_at:
            alert_at[name] = seen[name]
        if name in account:
            acct = account[name]
            account_seen[acct] = account_seen.get(acct, 0) + 1
            if "account=" in label and acct not in account_at:
                account_at[acct] = account_seen[acct]
    # a key of a flagged account counts as flagged (its `keys list` row shows the account's alert)
    flagged_keys = set(alert_at) | {n for n, a in account.items() if a in account_at}
    cfg = MonitorConfig()
    print(f"detection: {sum(len(q) for q in keys.values())} queries from {len(keys)} keys through the server on "
          f"127.0.0.1 in {seconds:.0f} s (non-200: {bad}); monitor defaults: distinct {cfg.distinct}, share "
          f"{cfg.distinct_share}, radius {cfg.radius}, min_images {cfg.min_images}, mosaics {cfg.mosaics}, history {cfg.history}")

    # PRADA's W per key, offline on the same features (the test is off by default).
    w_by_key = {}
    for name, queries in keys.items():
        feats = [f for q in queries for f in query_image_features(decode_image(q))]
        d = [float(np.linalg.norm(np.stack(feats[:i]) - feats[i], axis=1).min()) for i in range(1, len(feats))]
        w_by_key[name] = shapiro_w(d) if len(d) >= 20 else None

    classes: dict[str, list[str]] = {}
    for name, c in kind.items():
        classes.setdefault(c, []).append(name)
    ok = True
    print(f"{'class':<50} {'keys':>4} {'flagged':>7} {'queries/key':>12} {'alert at (query, share)':<28} PRADA W (>= 20 queries)")
    for c, names in classes.items():
        flagged = [n for n in names if n in flagged_keys]
        sizes = [len(keys[n]) for n in names]
        at = ", ".join(f"{alert_at[n]} ({alert_at[n] / len(keys[n]):.0%})" for n in flagged[:4] if n in alert_at)
        at = at or ("account" if flagged else "-")
        ws = [w_by_key[n] for n in names if w_by_key[n] is not None]
        wtxt = f"{min(ws):.3f}-{max(ws):.3f}" if ws else "-"
        size_txt = f"{min(sizes)}-{max(sizes)}" if min(sizes) != max(sizes) else str(sizes[0])
        print(f"{c:<50} {len(names):>4} {len(flagged):>7} {size_txt:>12} {at:<28} {wtxt}")
    benign = [n for n, c in kind.items() if c.startswith("benign") and not c.endswith("(flagged by design)")
              and n not in account]
    fp = sum(n in flagged_keys for n in benign)
    print(f"false positives: {fp}/{len(benign)} benign keys on their own = {fp / len(benign):.1%} (goal <= 1%)")
    teams = sorted({a for n, a in account.items() if n.startswith("team")})
    team_flagged = [a for a in teams if a in account_at]
    print(f"team accounts (5 casual keys each, {min(len(keys[n]) for n in account if n.startswith('team'))}-"
          f"{max(sum(len(keys[n]) for n in account if account[n] == a) for a in teams)} queries an account): "
          f"{len(team_flagged)}/{len(teams)} flagged as accounts")
    harvest_at = alert_at.get("harvest")
    if harvest_at is None:
        print("harvest, one key: NOT flagged")
        ok = False
    else:
        print(f"harvest, one key: flagged at query {harvest_at} of {len(keys['harvest'])} "
              f"({harvest_at / len(keys['harvest']):.0%}; goal: before 50%)")
        ok &= harvest_at < 0.5 * len(keys["harvest"])
    packed_at = alert_at.get("packed")
    tiles = sum(len(mosaic_tiles(decode_image(q))) for q in keys["packed"])
    print(f"packed harvest, one key ({len(keys['packed'])} requests, {tiles} images found in them): "
          + ("NOT flagged" if packed_at is None else f"flagged at request {packed_at}"))
    ok &= packed_at is not None
    for parts in (3, 6):
        names = [n for n in keys if n.startswith(f"spread{parts}_")]
        print(f"harvest over {parts} keys of {parts} accounts: {sum(n in alert_at for n in names)}/{parts} keys flagged")
        at = account_at.get(f"attacker{parts}")
        print(f"harvest over {parts} keys of one account: " + ("NOT flagged" if at is None else
              f"the account flagged at its query {at} of {len(keys['harvest'])} ({at / len(keys['harvest']):.0%})"))
        ok &= at is not None and at < 0.5 * len(keys["harvest"])
    ok &= fp / len(benign) <= 0.01
    return ok


async def hammer(url: str, tokens: list[str], inputs: list[bytes], clients: int) -> tuple[float, int]:
    """`clients` closed-loop clients (client i uses key i mod len(tokens)) share `inputs`; (wall s, non-200)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for data in inputs:
        queue.put_nowait(data)
    bad = 0

    async def client(http: httpx.AsyncClient, token: str) -> None:
        nonlocal bad
        while not queue.empty():
            data = queue.get_nowait()
            r = await http.post("/v1/translate", content=data,
                                headers={"Content-Type": "image/png", "Authorization": f"Bearer {token}"})
            bad += r.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, tokens[i % len(tokens)]) for i in range(clients)))
        return time.perf_counter() - started, bad


def monitor_cost() -> None:
    """The monitor's own time per query, in this process on one thread: features + nearest-query
    distances against a full history (+ the check), for an SR query from the demo and a 512 x 512 input."""
    from imgsteal.defenses.monitor import ExtractionMonitor

    torch.set_num_threads(1)
    cfg = MonitorConfig()
    rng = np.random.default_rng(0)
    photos = [load_image(p) for p in resolve_images("demo:attacker")]
    for name, image in (("64 x 96 SR query", bicubic_downscale(photos[0], SCALE)),
                        ("512 x 512 input", torch.rand(3, 512, 512)),
                        ("512 x 512 mosaic of 36 photos", decode_image(packed(photos)[0]))):
        monitor = ExtractionMonitor(cfg.model_copy(update={"distinct": 0}))
        for _ in range(cfg.history):  # a full distance window
            monitor.observe(1, "k", rng.random(query_features(image).shape[0]).astype(np.float32))
        n = 200
        started = time.perf_counter()
        for _ in range(n):
            monitor.observe(1, "k", query_image_features(image))
        print(f"monitor cost per query ({name}, history {cfg.history} full): {(time.perf_counter() - started) / n * 1000:.2f} ms")


def throughput(model: Path, work: Path, args) -> bool:
    paths = [p for spec in BENIGN_SPECS + ["demo:attacker"] for p in resolve_images(spec)]
    rng = random.Random(args.seed + 1)
    photos = [lr(load_image(p)) for p in paths]
    inputs = [photos[i % len(photos)] if i < len(photos) else lr(variant(load_image(paths[i % len(paths)]), rng))
              for i in range(args.requests)]
    rates: dict[bool, list[float]] = {False: [], True: []}
    bad = 0
    with running_server(model, work / "off.sqlite", workdir=work / "off", rate_per_s=0, monitor=False) as off, \
         running_server(model, work / "on.sqlite", workdir=work / "on", rate_per_s=0, monitor=True) as on:
        tokens = {False: [off.create_key(f"k{i}") for i in range(args.keys)],
                  True: [on.create_key(f"k{i}") for i in range(args.keys)]}
        for server, monitored in ((off, False), (on, True)):  # warm-up
            asyncio.run(hammer(server.url, tokens[monitored], inputs[: args.clients], args.clients))
        for round_ in range(args.rounds):
            for server, monitored in ((off, False), (on, True)) if round_ % 2 == 0 else ((on, True), (off, False)):
                wall, b = asyncio.run(hammer(server.url, tokens[monitored], inputs, args.clients))
                bad += b
                rates[monitored].append(len(inputs) / wall)
            print(f"round {round_ + 1}: monitor off {rates[False][-1]:.1f} img/s, on {rates[True][-1]:.1f} img/s")
        flagged = sum(1 for q in on.queries() if q["monitor"])
    off_rate, on_rate = statistics.median(rates[False]), statistics.median(rates[True])
    ratio = on_rate / off_rate
    print(f"throughput ({args.requests} requests of {len(photos)} photos + variants, {args.clients} clients over "
          f"{args.keys} keys): monitor off {off_rate:.1f} img/s, on {on_rate:.1f} img/s, ratio {ratio:.2f} (goal >= 0.90)"
          f"{f'; NON-200: {bad}' if bad else ''}; alerts raised meanwhile: {flagged}")
    return ratio >= 0.9 and not bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--casual", type=int, default=200, help="benign keys with 1-8 photos each")
    parser.add_argument("--collages", type=int, default=20, help="benign keys with 1-3 collages each")
    parser.add_argument("--teams", type=int, default=10, help="benign accounts of 5 casual keys each")
    parser.add_argument("--requests", type=int, default=240, help="requests per throughput round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--keys", type=int, default=8, help="keys the throughput clients use")
    parser.add_argument("--n-blocks", type=int, default=1, help="SRResNet blocks of the random-init victim (throughput)")
    parser.add_argument("--channels", type=int, default=8, help="its channels: a tiny model, so the monitor's share shows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay-seeds", type=int, default=5, help="further traffic draws replayed in-process (0: none)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        def victim(name: str, n_blocks: int, channels: int) -> Path:
            generator = build_model("srresnet", scale=SCALE, n_blocks=n_blocks, channels=channels)
            return save_checkpoint(work / name, {"task": "sr", "scale": SCALE, "export": "generator",
                                   "archs": {"generator": generator.build_spec}}, {"generator": generator})

        tiny, model = victim("tiny.safetensors", 1, 8), victim("model.safetensors", args.n_blocks, args.channels)
        print(f"victims: random-init SRResNet x{SCALE}; detection on 1 block, 8 channels (the monitor looks at inputs "
              f"only), throughput on {args.n_blocks} blocks, {args.channels} channels; torch threads {torch.get_num_threads()}")
        ok = detection(tiny, work, args)
        if args.replay_seeds:
            replay(range(args.seed + 1, args.seed + 1 + args.replay_seeds), args.casual, args.collages, args.teams)
        monitor_cost()
        if not args.skip_throughput:
            ok &= throughput(model, work, args)
    print("goals:", "met" if ok else "NOT all met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
