"""realloop-train under torchrun (DistributedDataParallel, gloo on CPU): the same loss curve as one process with the
same global batch, one writer, Ctrl-C agreed by the ranks, resume, and a checkpoint the normal loader reads."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realloop.policies.checkpoint import load_policy
from realloop.policies.train import batch_indices, compose_config, rank_seed, shard_batches, train
from realloop.sim.collect import collect
from realloop.sim.collect import compose_config as collect_config

# dropout-free and crop-free: the BC loss is a function of the batch alone, so 2 ranks x 8 samples with averaged
# gradients are 1 process x 16 up to float rounding
BC = ["policy=bc", "policy.hidden_dims=[32,32]", "policy.dropout=0.0"]
COMMON = ["batch_size=16", "log_every=1", "val_every=10", "val_batches=2", "optim.warmup_steps=5", "device=cpu"]


@pytest.fixture(scope="module")
def lift_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lift.zarr"
    collect(collect_config(["task=arm_lift", "episodes=4", f"out={path}"]), progress=False)
    return path


def torchrun(*args: str, nproc: int = 2) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.Popen(
        [*command, "-m", "realloop.policies.train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def metrics(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_each_rank_trains_its_slice_of_the_global_batch() -> None:
    full = batch_indices(50, 8, seed=3, start_step=0)
    ranks = [shard_batches(batch_indices(50, 8, seed=3, start_step=0), r, 2) for r in range(2)]
    for _ in range(15):  # two epochs and more
        a, b = next(ranks[0]), next(ranks[1])
        assert len(a) == len(b) == 4 and a + b == next(full)
    assert len({rank_seed(0, r) for r in range(4)} | {rank_seed(1, 1)}) == 5


def test_a_batch_size_the_processes_cannot_share_is_refused(
    lift_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    cfg = compose_config([*BC, f"dataset.path={lift_dataset}", "batch_size=18", f"out={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match=r"^batch_size=18 does not divide among the 4 processes: .*multiple of 4$"):
        train(cfg, progress=False)
    assert not torch.distributed.is_initialized() and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_ranks_match_one_process_through_ctrl_c_and_resume(lift_dataset: Path, tmp_path: Path) -> None:
    """torchrun, 2 ranks: Ctrl-C (torchrun forwards it to both) stops both at one step, checkpointed by rank 0
    alone; resumed under torchrun to ``stop_at``, the curve is the one process's, step by step."""
    args = [*BC, f"dataset.path={lift_dataset}", *COMMON, "steps=100000", "checkpoint_every=100000"]
    out = tmp_path / "ddp"
    proc = torchrun(*args, f"out={out}")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # both ranks are training
        if (out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    messages = [line for line in err.splitlines() if line.startswith("realloop-train")]
    assert len(messages) == 1 and messages[0].startswith("realloop-train: interrupted at step "), err
    step = int(messages[0].split("interrupted at step ")[1].split(";")[0])
    # rank 0 alone wrote: one checkpoint, one TensorBoard file, each step once in metrics.csv
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last", f"step_{step:07d}"]
    assert len(list((out / "tb").iterdir())) == 1
    assert [int(r["step"]) for r in metrics(out)] == list(range(1, step + 1))
    state = load_file(str(out / "checkpoints" / "last" / "training_state.safetensors"))
    assert {"rng.torch", "rng.torch.rank1"} <= state.keys()  # each rank's random stream, for resume

    end = step + 12
    proc = torchrun(*args, f"out={out}", "resume=true", f"stop_at={end}")
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert stdout.count("trained bc ") == 1 and f"for 12 steps (to step {end}) on 2 x cpu" in stdout, stdout
    assert (out / "checkpoints" / "last").resolve().name == f"step_{end:07d}"

    one = train(compose_config([*args, f"stop_at={end}", f"out={tmp_path / 'one'}"]), progress=False)
    ddp, single = metrics(out), metrics(tmp_path / "one")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == [str(s) for s in range(1, end + 1)]
    for a, b in zip(ddp, single, strict=True):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-5), (a, b)
        assert a["lr"] == b["lr"]
        if b["val_loss"] and a["step"] != str(step):  # the interrupted step validated only in the DDP run
            assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5), (a, b)
    # the DDP checkpoint: plain policy weights (no DDP "module." prefix) that the normal loader reads
    weights = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    reference = load_file(str(Path(one.checkpoint) / "model.safetensors"))
    assert weights.keys() == reference.keys() and not any(k.startswith("module.") for k in weights)
    # float rounding of the all-reduce moves near-zero weights by a few 1e-6 over the run (Adam scales tiny
    # gradient differences up); one optimiser step moves a weight by up to lr = 1e-3 (the bc preset)
    assert all(torch.allclose(weights[k], reference[k], rtol=1e-4, atol=1e-5) for k in weights)
    loaded = load_policy(out)
    assert type(loaded.policy).__name__ == "MLPPolicy" and loaded.meta["step"] == end
