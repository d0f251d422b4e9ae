"""DistributedDataParallel training: 2 processes with gloo on CPU, launched by torchrun."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from imgsteal.train.checkpoint import load_checkpoint

# Each rank trains a tiny SRResNet (pixel loss) and a tiny pix2pix GAN through the ordinary
# run_training, then dumps its own weights (parameters and BatchNorm buffers) so the test can
# compare the ranks.
WORKER = textwrap.dedent("""
    import sys
    import torch
    from safetensors.torch import save_file
    from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
    from imgsteal.models import build_model
    from imgsteal.train.distributed import init_from_env, shutdown
    from imgsteal.train.loop import run_training
    from imgsteal.train.paired import PixelRecipe
    from imgsteal.train.pix2pix import Pix2PixRecipe

    out = sys.argv[1]
    ctx = init_from_env("cpu")
    assert ctx is not None and ctx.world_size == 2
    torch.manual_seed(1000 + ctx.rank)  # different initial weights per rank: DDP must broadcast rank 0's
    recipe = PixelRecipe(build_model("srresnet", scale=2, n_blocks=1, channels=8), torch.device("cpu"), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    xs = [to_uint8_tensor(torch.rand(3, 12, 12, generator=gen)) for _ in range(8)]
    ys = [to_uint8_tensor(torch.rand(3, 24, 24, generator=gen)) for _ in range(8)]
    source = PairedPatchSource(xs, ys, scale=2, patch=8, batch_size=4, seed=0)
    result = run_training(recipe, source, run_dir=out + "/run", epochs=3, meta={"task": "sr", "scale": 2},
                          log_every=1, checkpoint_every=0, progress=False)
    assert result.steps == 6
    state = {k: v.detach().clone().contiguous() for k, v in recipe.modules["generator"].state_dict().items()}
    save_file(state, f"{out}/rank{ctx.rank}.safetensors")

    # A GAN: the discriminator is called three times per step and frozen in the generator step.
    torch.manual_seed(2000 + ctx.rank)
    gan = Pix2PixRecipe(build_model("unet", ngf=4, image_size=32, norm="batch", use_dropout=True),
                        build_model("patchgan", in_channels=6, ndf=4, n_layers=3, norm="batch"), torch.device("cpu"), epochs=2)
    xs = [to_uint8_tensor(torch.rand(3, 32, 32, generator=gen)) for _ in range(4)]
    ys = [to_uint8_tensor(torch.rand(3, 32, 32, generator=gen)) for _ in range(4)]
    run_training(gan, PairedPatchSource(xs, ys, scale=1, patch=32, batch_size=4, seed=0), run_dir=out + "/gan",
                 epochs=2, meta={"task": "style"}, checkpoint_every=0, progress=False)
    state = {f"{name}.{k}": v.detach().clone().contiguous()
             for name, m in gan.modules.items() for k, v in m.state_dict().items()}
    save_file(state, f"{out}/gan-rank{ctx.rank}.safetensors")
    shutdown()
""")


@pytest.mark.slow
def test_two_gloo_processes_stay_in_sync_and_only_rank0_writes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for prefix in ("", "gan-"):
        rank0, rank1 = load_file(tmp_path / f"{prefix}rank0.safetensors"), load_file(tmp_path / f"{prefix}rank1.safetensors")
        assert rank0.keys() == rank1.keys()
        for name in rank0:
            assert torch.equal(rank0[name], rank1[name]), f"{prefix}{name} differs across ranks"
    rank0 = load_file(tmp_path / "rank0.safetensors")
    # The exported model is rank 0's weights after training, written once.
    exported = load_checkpoint(tmp_path / "run" / "model.safetensors")
    for name, value in exported.module_state("generator").items():
        assert torch.equal(value, rank0[name])
    assert exported.meta["step"] == 6
    # Only rank 0 logs: one line per step, not two.
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    # Training moved the weights away from rank 0's initialisation.
    torch.manual_seed(1000)
    from imgsteal.models import build_model

    init = build_model("srresnet", scale=2, n_blocks=1, channels=8).state_dict()
    assert not torch.equal(init["head.0.weight"], rank0["head.0.weight"])


def test_sharded_source_splits_each_batch_by_rank():
    from imgsteal.train.distributed import ShardedSource

    class Source:
        batches_per_epoch = 3

        def batch(self, epoch, index):
            base = torch.arange(4) + 10 * index + 100 * epoch
            return base, -base

    shards = [ShardedSource(Source(), rank, 2) for rank in (0, 1)]
    assert shards[0].batches_per_epoch == 3
    a, b = shards[0].batch(1, 2), shards[1].batch(1, 2)
    assert a[0].tolist() == [120, 122] and b[0].tolist() == [121, 123]
    assert torch.equal(a[1], -a[0])
    assert sorted(a[0].tolist() + b[0].tolist()) == list(range(120, 124))
    with pytest.raises(Exception, match="cannot be split"):
        ShardedSource(Source(), 0, 8).batch(0, 0)


def test_single_process_has_no_distributed_context(monkeypatch):
    from imgsteal.train.distributed import active_context, init_from_env

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("cpu") is None
    assert active_context() is None
