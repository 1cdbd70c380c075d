"""Nothing read from a checkpoint or a dataset runs code: env ids and env kwargs that realloop-eval (``env=auto``)
and the chunk-latency benchmark take from a checkpoint are checked before gymnasium sees them.

gymnasium imports ``module`` to make an id ``module:Env``. Each test puts a probe module on ``sys.path`` whose
import leaves a marker file, names it in a checkpoint (or in the attributes of the dataset a checkpoint was
trained on) and shows that it is refused and never imported.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realloop.data import Dataset
from realloop.policies.checkpoint import UnsafeConfigError, check_env_id, check_env_kwargs
from realloop.policies.evaluate import EvalError, compose_config, env_kwargs_from_checkpoint, main, run
from realloop.policies.train import compose_config as train_config
from realloop.policies.train import train

REPO = Path(__file__).resolve().parents[2]
LIFT = "realloop/ArmLift-v0"
DATASET_PROBE = f"realloop_probe_{uuid.uuid4().hex[:8]}"  # the module the dataset's env_id names


def _probe(folder: Path, name: str | None = None) -> tuple[str, Path]:
    """A module ``name`` in ``folder`` (put on sys.path by the caller) that writes a marker file when imported."""
    name = name or f"realloop_probe_{uuid.uuid4().hex[:8]}"
    marker = folder / f"{name}.imported"
    (folder / f"{name}.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n")
    return name, marker


@pytest.fixture(scope="module")
def probe_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BC checkpoint trained on a real dataset whose attributes say ``env_id: <probe module>:Env``."""
    tmp = tmp_path_factory.mktemp("probe")
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"], "rate_hz": 20},
        "action": {"dtype": "float32", "shape": [1], "names": ["torque"], "rate_hz": 20},
    }
    ds = Dataset.create(tmp / "data.zarr", features=features, attributes={"env_id": f"{DATASET_PROBE}:Env"},
                        durable=False)  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(2):
        ep = ds.begin_episode(task="probe", source="scripted")
        for t in range(30):
            ep.add("observation.state", t * 0.05, rng.standard_normal(3).astype(np.float32))
            ep.add("action", t * 0.05, rng.standard_normal(1).astype(np.float32))
        ep.commit()
    ds.close()
    cfg = train_config([
        "policy=bc", f"dataset.path={tmp / 'data.zarr'}", f"out={tmp / 'run'}", "policy.hidden_dims=[16]",
        "policy.obs_keys=[observation.state]", "steps=2", "batch_size=8", "log_every=1", "val_every=0",
        "checkpoint_every=2", "device=cpu",
    ])  # fmt: skip
    return (Path(train(cfg, progress=False).out) / "checkpoints" / "last").resolve()


def _crafted(checkpoint: Path, folder: Path, env_id: Any = LIFT, env: Any = None) -> Path:
    """A copy of ``checkpoint`` whose policy.json records ``env_id`` and the task env kwargs ``env``."""
    out = folder / "crafted"
    shutil.copytree(checkpoint, out)
    meta = json.loads((out / "policy.json").read_text())
    meta["dataset"]["attributes"] = {"env_id": env_id, "collect_config": {"task": {"env": env}}}
    (out / "policy.json").write_text(json.dumps(meta))
    return out


def test_a_dataset_attribute_naming_a_module_is_refused_and_never_imported(
    probe_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name, marker = _probe(tmp_path, DATASET_PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    meta = json.loads((probe_checkpoint / "policy.json").read_text())
    assert meta["dataset"]["attributes"]["env_id"] == f"{name}:Env"  # training copied it from the dataset

    monkeypatch.setattr(
        sys,
        "argv",
        ["realloop-eval", f"checkpoint={probe_checkpoint}", "episodes=1", "device=cpu", f"out={tmp_path / 'res.json'}"],
    )  # env=auto: the env the checkpoint records
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err, err
    assert err.startswith("realloop-eval: error: ") and str(probe_checkpoint / "policy.json") in err
    assert f"'{name}:Env'" in err and "env=<gymnasium id>" in err
    assert not marker.exists() and name not in sys.modules
    assert not (tmp_path / "res.json").exists()


@pytest.mark.parametrize(
    "env_id",
    [
        "os:Env",
        "mymod:Env",
        "probe",
        "gymnasium/CartPole-v1",
        "CartPole-v1",
        "realloop/NoSuchTask-v0",
        ["realloop/ArmLift-v0"],
    ],
)
def test_a_checkpoint_naming_a_non_realloop_env_is_refused(
    probe_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env_id: Any
) -> None:
    name, marker = _probe(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    if env_id == "probe":
        env_id = f"{name}:Env"
    crafted = _crafted(probe_checkpoint, tmp_path, env_id)
    with pytest.raises(UnsafeConfigError, match=r"policy\.json \(dataset\.attributes\.env_id\).*not one of realloop"):
        run(compose_config([f"checkpoint={crafted}", "episodes=1", "device=cpu", f"out={tmp_path / 'r.json'}"]))
    assert not marker.exists() and name not in sys.modules


def test_the_chunk_latency_benchmark_checks_the_checkpoint_too(
    probe_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, marker = _probe(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.spec_from_file_location("chunk_latency", REPO / "benchmarks" / "chunk_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    crafted = _crafted(probe_checkpoint, tmp_path, f"{name}:Env")
    with pytest.raises(UnsafeConfigError, match=re.escape(str(crafted / "policy.json"))):
        bench.rollout_successes(str(crafted), 1, "ahead", 1)
    assert not marker.exists() and name not in sys.modules


@pytest.mark.parametrize(("env", "message"), [
    ({"entry_point": "mymod:Env"}, "env kwarg 'entry_point' is not a parameter"),
    ({"disable_env_checker": True}, "env kwarg 'disable_env_checker'"),
    ({"robot": "../../evil/spec.yaml"}, "not the name of a robot in configs/robot/"),
    ({"randomize": {"_target_": "mymod.Thing"}}, "_target_"),
    ({"action": {"scale": "${oc.env:HOME}"}}, "interpolation"),
    ({"cameras": [{"name": 1.0j}]}, "plain JSON data"),
    ({1: 2}, "env kwarg 1"),
])  # fmt: skip
def test_env_kwargs_from_a_checkpoint_must_be_task_parameters_holding_data(env: dict, message: str) -> None:
    meta = {"dataset": {"attributes": {"env_id": LIFT, "collect_config": {"task": {"env": env}}}}, "features": {}}
    with pytest.raises(UnsafeConfigError, match=message) as exc:
        env_kwargs_from_checkpoint(meta, "/x/policy.json")
    assert str(exc.value).startswith("/x/policy.json") and "\n" not in str(exc.value)


def test_malformed_attributes_are_explained() -> None:
    meta = {"dataset": {"attributes": {"env_id": LIFT, "collect_config": "task=x"}}, "features": {}}
    with pytest.raises(EvalError, match=r"collect_config\) is a str, not a mapping"):
        env_kwargs_from_checkpoint(meta, "policy.json")


def test_realloop_tasks_and_their_recorded_kwargs_pass() -> None:
    for task in ("realloop/ArmReach-v0", LIFT, "realloop/ArmPushT-v0", "realloop/QuadWalk-v0"):
        assert check_env_id(task, "f") == task
    kwargs = {
        "control_mode": "ee_delta",
        "max_episode_steps": 100,
        "cameras": ["front"],
        "image_size": [96, 96],
        "randomize": {"friction": [0.8, 1.2], "com": 0.005},
        "robot": "arm6",
        "render_mode": None,
    }
    assert check_env_kwargs(kwargs, "f") == kwargs
    meta = {"dataset": {"attributes": {"env_id": LIFT, "control_mode": "joint_delta",
                                       "collect_config": {"task": {"env": {"max_episode_steps": 7}}}}},
            "features": {"observation.images.front": {"shape": [32, 48, 3]}}}  # fmt: skip
    assert env_kwargs_from_checkpoint(meta) == (
        LIFT,
        {"max_episode_steps": 7, "control_mode": "joint_delta", "cameras": ["front"], "image_size": [32, 48]},
    )


def test_an_id_the_user_types_is_theirs_even_module_env(
    probe_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line is the user's: ``env=module:Env`` imports their module (what the probe would show, were
    a file's id not checked), and the checkpoint's refused id is then not consulted."""
    name, marker = _probe(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    crafted = _crafted(probe_checkpoint, tmp_path, f"{name}:Env")
    with pytest.raises(EvalError, match=f"cannot make env '{name}:Env'"):  # imported; no Env registered by it
        run(compose_config([f"checkpoint={crafted}", f"env={name}:Env", "episodes=1", "device=cpu",
                            f"out={tmp_path / 'r.json'}"]))  # fmt: skip
    assert marker.exists()
