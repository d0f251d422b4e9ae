"""The adaptive-attack scorecard (issue 15, item 3) of a defence config: run it, time it, print the table.

Runs `imgsteal defense evaluate CONFIG --out OUT` (the pipeline; resumes in OUT) and prints, per
defence x attack, the verification rate at the threshold fixed on the independent models, the
surrogate's fidelity to the victim and the defence's cost to honest clients, with the false-positive
bound the number of independent models supports.

    OMP_NUM_THREADS=1 python benchmarks/bench_scorecard.py                        # the demo preset, CPU
    python benchmarks/bench_scorecard.py --config configs/defense/demo-boxfree.yaml --out runs/bench-boxfree
    python benchmarks/bench_scorecard.py --report-only --out runs/scorecard-demo  # print a finished run

Measured numbers and what they mean: docs/defenses.md, "Adaptive-attack scorecard".
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "defense" / "demo-scorecard.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-scorecard"))
    parser.add_argument("--report-only", action="store_true", help="print the scorecard of a finished run in --out")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")
    args = parser.parse_args()

    from imgsteal.defenses.scorecard import scorecard_rows

    started, cpu = time.perf_counter(), cpu_seconds()
    if not args.report_only:
        from imgsteal.defenses.evaluate import load_defense_config, run_defense_evaluation

        cfg = load_defense_config(args.config)
        if cfg.scorecard is None:
            parser.error(f"{args.config} has no `scorecard:` section")
        run_defense_evaluation(cfg, args.out, progress=False)
    results = json.loads((args.out / "results.json").read_text())
    card = results.get("scorecard")
    if card is None:
        parser.error(f"{args.out}/results.json has no scorecard")
    header, rows = scorecard_rows(card)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    for run, cal in card["calibration"].items():
        print(f"{run}: {cal['statistic']} threshold {cal['threshold']:.3f}; {cal['false_positives']}/"
              f"{cal['independent_models']} independent models above it (95% upper bound on the rate "
              f"{cal['fpr_upper_95']:.0%})")
    summary = {"config": str(args.config), "out": str(args.out), "rows": [{k: v for k, v in r.items() if k != "suspects"}
                                                                        for r in card["rows"]],
               "calibration": {r: {k: v for k, v in c.items() if k != "independent"} for r, c in card["calibration"].items()}}
    if not args.report_only:
        summary["wall_s"] = round(time.perf_counter() - started, 1)
        summary["cpu_s"] = round(cpu_seconds() - cpu, 1)
        print(f"time: {summary['wall_s']:.0f} s wall, {summary['cpu_s']:.0f} s CPU (this process and its servers)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
