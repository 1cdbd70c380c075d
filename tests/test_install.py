"""A non-editable install works without the checkout: the wheel built from this tree, installed into a fresh venv
outside it, runs realloop-collect, realloop-train and realloop-launch from a folder outside the checkout, finding
configs/ and sim/models/ as package data through realloop.configs.

Third-party dependencies are not installed again: the fresh venv gets a .pth line naming the project venv's
site-packages. A path added by a .pth file is not a site dir, so the .pth files inside it (the editable install's
``__editable__`` finder, which would import realloop from this checkout) are not run; the child interpreter is
checked to import every realloop module from the installed wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", "*.zarr")


@dataclass
class Install:
    venv: Path
    site: Path  # the fresh venv's site-packages, where the wheel went
    wheel: Path
    work: Path  # cwd of every command, outside the checkout
    env: dict[str, str]

    def run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(self.venv / "bin" / cmd[0]), *cmd[1:]],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert res.returncode == 0, f"{' '.join(cmd)}: {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        return res


def _top_folders() -> dict[str, str]:
    """The top-level folders of [tool.setuptools.package-dir] and where they install (``data`` -> ``realloop/data``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {d: pkg.replace(".", "/") for pkg, d in cfg["tool"]["setuptools"]["package-dir"].items() if "/" not in d}


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("install")
    assert not base.resolve().is_relative_to(ROOT)
    # build from a clean copy: a stale build/lib in the checkout would put deleted modules into the wheel, and the
    # build writes build/ and *.egg-info where it runs
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in _top_folders():
        shutil.copytree(ROOT / folder, src / folder, ignore=COPY_IGNORE)
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(base / "wheel"),
            str(src),
        ],
        check=True,
        env=pip_env,
        capture_output=True,
    )
    (wheel,) = (base / "wheel").glob("realloop-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # pip of the project venv installs into the fresh one (console scripts get its interpreter); the deps .pth is
    # written after, so this pip sees an empty venv and never touches the project's editable realloop
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=pip_env,
        capture_output=True,
    )
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_realloop_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))

    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1", PYTHONNOUSERSITE="1")
    env.setdefault("MUJOCO_GL", "egl")
    return Install(venv, site, wheel, work, env)


def _files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(
        p for p in folder.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def test_wheel_ships_every_module_config_and_model(install: Install) -> None:
    names = set(zipfile.ZipFile(install.wheel).namelist())
    # every module of every code folder: a subpackage missing from [tool.setuptools] packages is not installed
    modules = [
        f"{prefix}/{p.relative_to(ROOT / folder).as_posix()}"
        for folder, prefix in _top_folders().items()
        for p in _files(ROOT / folder, "*.py")
    ]
    assert not [n for n in modules if n not in names], "not in the wheel (add the package to pyproject.toml)"
    # all of configs/ and sim/models/, whatever the file type, and the ros2 launch file
    data = [
        f"{prefix}/{p.relative_to(ROOT / folder).as_posix()}"
        for folder, prefix in (("configs", "realloop/configs"), ("sim/models", "realloop/sim/models"))
        for p in _files(ROOT / folder)
    ]
    assert any(n.startswith("realloop/configs/graph/") for n in data)
    assert not [n for n in data if n not in names]
    assert "realloop/launch/realloop.launch.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_copy_is_imported(install: Install) -> None:
    probe = """
import json, sys
import realloop, realloop.configs, realloop.sim, realloop.data, realloop.policies.train
from realloop.robot.launch.graph import GRAPH_DIR
from realloop.robot.spec import load_robot_spec
print(json.dumps({
    "path": sys.path, "meta_path": [repr(f) for f in sys.meta_path],
    "modules": {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.split(".")[0] == "realloop"},
    "dirs": [str(realloop.configs.CONFIG_DIR), str(GRAPH_DIR), str(load_robot_spec("arm6").mjcf)],
}))
"""
    info = json.loads(install.run("python", "-c", probe).stdout.splitlines()[-1])
    site = install.site.resolve()
    assert not [f for f in info["meta_path"] if "editable" in f.lower()], info["meta_path"]
    # nothing of the checkout on sys.path but the project venv's site-packages (the .pth: third-party deps)
    on_path = [p for p in info["path"] if p and Path(p).resolve().is_relative_to(ROOT)]
    assert all(Path(p).resolve().is_relative_to(ROOT / ".venv") for p in on_path), on_path
    assert len(info["modules"]) > 20
    for name, file in info["modules"].items():
        assert file and Path(file).resolve().is_relative_to(site), (name, file)
    for d in info["dirs"]:
        assert Path(d).resolve().is_relative_to(site / "realloop") and Path(d).exists(), d


def test_collect_train_launch_from_the_install(install: Install) -> None:
    work = install.work
    install.run("realloop-collect", "task=arm_reach", "episodes=2", f"out={work / 'd.zarr'}")
    assert (work / "d.zarr").is_dir()
    assert json.loads((work / "d.collect.json").read_text())["episodes"] == 2

    install.run(
        "realloop-train",
        "policy=bc",
        f"dataset.path={work / 'd.zarr'}",
        "steps=2",
        "batch_size=8",
        "device=cpu",
        f"out={work / 'train'}",
    )
    assert (work / "train" / "checkpoints" / "last").exists()

    # the shipped sim_arm_policy graph: 4 node processes (the installed interpreter) over Cyclone DDS; stopped
    # with SIGTERM (exit 0) once the recorder committed the scripted policy's episode, else after `duration`
    rec = work / "rec.zarr"
    domain = 50 + os.getpid() % 40  # away from the sim's default 42... mostly, and from tests/robot's 100..229
    cmd = [
        str(install.venv / "bin" / "realloop-launch"),
        "graph=sim_arm_policy",
        "duration=90",
        f"domain_id={domain}",
        f"nodes.recorder.params.dataset={rec}",
        "nodes.sim_mirror.params.cameras=[]",
        "nodes.recorder.params.streams.front=null",
        "nodes.recorder.params.streams.wrist=null",
    ]
    proc = subprocess.Popen(cmd, cwd=work, env=install.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    committed = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[recorder]") and "committed" in line:
                committed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        committed.wait(120)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    out = "".join(lines)
    assert committed.is_set(), out[-4000:]
    assert rc == 0, out[-4000:]
    assert "4/4 nodes exited cleanly" in out, out[-4000:]
    summary = json.loads((work / "outputs" / "launch" / "sim_arm_policy.launch.json").read_text())
    assert [n["returncode"] for n in summary["nodes"]] == [0, 0, 0, 0], summary

    from realloop.data import Dataset

    ds = Dataset.open(rec)
    assert len(ds) >= 1 and ds.episode(0).success is True
