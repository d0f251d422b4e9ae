"""Entry point torchrun starts for a cell trained by several processes (one per GPU):

    python -m torch.distributed.run --standalone --nproc_per_node N \\
        -m imgsteal.experiments.train_cell SURROGATE_CONFIG.json RUN_DIR

Each process joins the process group, takes its GPU (cuda:LOCAL_RANK) or the CPU with gloo, and
runs the ordinary surrogate training; run_training does the DistributedDataParallel part and only
rank 0 writes the run folder. A killed run resumes from rank 0's last checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """argv: [surrogate config JSON, run folder]. Returns the exit code."""
    from imgsteal.attack.surrogate import SurrogateConfig, train_surrogate
    from imgsteal.train.distributed import init_from_env, shutdown

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m imgsteal.experiments.train_cell SURROGATE_CONFIG.json RUN_DIR", file=sys.stderr)
        return 2
    cfg = SurrogateConfig.model_validate_json(Path(args[0]).read_text(encoding="utf-8"))
    context = init_from_env(cfg.device)
    try:
        if context is not None:
            cfg = cfg.model_copy(update={"device": str(context.device)})
        train_surrogate(cfg, args[1], resume=True, progress=context is None or context.is_main)
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
