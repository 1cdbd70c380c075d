"""Node parameters are declared by configs/node/<kind>.yaml: undeclared keys and wrong types are refused with one
line, by the node process, at graph load and by realloop-launch, before anything starts."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from realloop.configs.schema import ConfigError, Schema
from realloop.robot.args import CONFIG_DIR, check_params, load_node_config, node_schema
from realloop.robot.launch import load_graph
from realloop.robot.launch.graph import graph_from_dict
from realloop.robot.nodes import NODES, run_node


@pytest.mark.parametrize("kind", list(NODES))
def test_every_kind_declares_its_defaults_consistently(kind: str) -> None:
    assert (CONFIG_DIR / f"{kind}.yaml").is_file()
    defaults = load_node_config(kind)
    assert not {"_open", "_types"} & set(defaults)  # declaration keys are not parameters
    check_params(kind, defaults)  # the defaults satisfy their own declaration
    schema = node_schema(kind)
    assert {"name", "use_sim_time"} <= set(schema.defaults)  # every kind takes the common ones


def test_unknown_key_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as e:
        check_params("policy_runner", {"polcy": {"kind": "checkpoint"}})
    msg = str(e.value)
    assert msg.startswith("unknown parameter 'polcy' for node policy_runner (did you mean 'policy'?); known: ")
    assert "rate_hz" in msg and "use_sim_time" in msg and "\n" not in msg


def test_nested_unknown_key_is_named_with_its_path() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown parameter 'camera_info\.fle' for node camera "
        r"\(did you mean 'camera_info\.file'\?\); known: camera_info\.d, ",
    ):
        check_params("camera", {"camera_info": {"fle": "cal.yaml"}})
    with pytest.raises(ConfigError, match=r"unknown parameter 'speeds\.linear' for node teleop"):
        check_params("teleop", {"speeds": {"linear": 0.1}})


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("camera", {"rate_hz": "abc"}, "parameter 'rate_hz' of node camera must be a number, got 'abc'"),
    ("camera", {"jpeg_quality": 9.5}, "parameter 'jpeg_quality' of node camera must be an integer, got 9.5"),
    ("camera", {"loop": "yes please"}, "parameter 'loop' of node camera must be true or false, got 'yes please'"),
    ("camera", {"device": [0]}, "parameter 'device' of node camera must be an integer or a string, got [0]"),
    ("teleop", {"speeds": 3}, "parameter 'speeds' of node teleop must be a mapping, got 3"),
    ("recorder", {"attributes": "lab"}, "parameter 'attributes' of node recorder must be a mapping, got 'lab'"),
    ("sim_mirror", {"cameras": "front"}, "parameter 'cameras' of node sim_mirror must be a list or null, got 'front'"),
    ("safety_filter", {"rate_hz": True}, "parameter 'rate_hz' of node safety_filter must be a number, got True"),
])  # fmt: skip
def test_wrong_type_is_refused(kind: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        check_params(kind, params)
    assert str(e.value) == message


def test_declared_types_accept_what_they_declare() -> None:
    check_params("camera", {"rate_hz": 15, "device": "/dev/video2"})  # an int where a number is declared
    check_params("camera", {"device": 2, "width": 640})  # a null default takes anything
    check_params("policy_runner", {"inference_lead": 3, "max_episode_s": None, "cameras": None})
    check_params("sim_mirror", {"image_width": None, "cameras": []})


def test_open_mappings_take_any_key_but_stay_mappings() -> None:
    check_params(
        "recorder",
        {
            "attributes": {"operator": "ana", "scene": {"table": 2}},
            "streams": {"gripper": None, "extra": {"topic": "/x", "type": "Bool"}},
        },
    )
    check_params("policy_runner", {"policy": {"kind": "checkpoint", "path": "runs/x", "num_inference_steps": 4}})
    check_params("teleop", {"keyboard": {"keymap": {"ctrl+x": "quit"}, "hold_s": 0.1}, "joy": {"mapping": {}}})
    with pytest.raises(ConfigError, match=r"unknown parameter 'keyboard\.hold'"):
        check_params("teleop", {"keyboard": {"keymap": {"ctrl+x": "quit"}, "hold": 0.1}})  # only keymap is open
    with pytest.raises(ConfigError, match="'policy' of node policy_runner must be a mapping, got 'expert'"):
        check_params("policy_runner", {"policy": "expert"})


def test_declaration_mistakes_name_the_file() -> None:
    with pytest.raises(ConfigError, match=r"x\.yaml: _types\.rate_hz: unknown type 'float'"):
        Schema.from_declaration({"rate_hz": 1.0, "_types": {"rate_hz": "float"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"x\.yaml: _open/_types name 'streams'"):
        Schema.from_declaration({"stream": {}, "_open": ["streams"]}, "x.yaml")


def test_run_node_refuses_bad_parameters_before_building_the_node(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    built = []

    def factory(**kwargs: object) -> None:
        built.append(kwargs)

    with caplog.at_level(logging.ERROR):
        assert run_node("recorder", factory, ["dataset=x.zarr", "duraton=5"]) == 2
        assert run_node("camera", factory, ["--ros-args", "-p", "rate_hz:=abc"]) == 2
    assert not built
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].startswith("unknown parameter 'duraton' for node recorder; known: ")
    assert errors[1] == "parameter 'rate_hz' of node camera must be a number, got 'abc'"
    assert run_node("camera", factory, ["rate_hz"]) == 2  # not KEY=VALUE: one line, no traceback
    assert capsys.readouterr().err.strip() == "realloop-node camera: bad override 'rate_hz': expected KEY=VALUE"


def test_a_graph_with_a_misspelt_parameter_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"^graph 'sim_arm_policy': unknown parameter 'polcy' for node "
        r"policy_runner \(did you mean 'policy'\?\)",
    ):
        load_graph("sim_arm_policy", ["nodes.policy_runner.params.polcy.kind=checkpoint"])
    graph = {
        "name": "typo",
        "nodes": {
            "front": {"kind": "camera", "params": {"rate_hz": 30, "jpg_quality": 80}},
            "sim_mirror": {"kind": "sim_mirror", "params": {"task": "arm_lift"}},
        },
    }
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(graph))
    with pytest.raises(
        ValueError,
        match=r"^graph 'typo': unknown parameter 'jpg_quality' for node front \(camera\) "
        r"\(did you mean 'jpeg_quality'\?\)",
    ):
        load_graph(str(path))
    with pytest.raises(ValueError, match="key 'domain_id' of graph 'sim_arm_policy' must be an integer or null"):
        load_graph("sim_arm_policy", ["domain_id=abc"])
    with pytest.raises(ValueError, match=r"unknown key 'localhost' for graph 'g' \(did you mean 'localhost_only'"):
        graph_from_dict({"name": "g", "localhost": True, "nodes": {"a": {"kind": "camera"}}})


@pytest.mark.parametrize(("arg", "message"), [
    ("duraton=5", "realloop-launch: unknown parameter 'duraton' (did you mean 'duration'?); known: description, "
                  "domain_id, duration, graph, localhost_only, name, nodes"),
    ("duration=abc", "realloop-launch: parameter 'duration' must be a number or null, got 'abc'"),
])  # fmt: skip
def test_launch_refuses_a_bad_own_parameter_at_once(arg: str, message: str, tmp_path: Path) -> None:
    start = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "realloop.robot.launch.cli", "graph=sim_arm_teleop", arg],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip() == message and res.stdout == ""
    assert time.monotonic() - start < 30  # refused, not run until a duration that never comes
    assert not (tmp_path / "outputs").exists()  # no node started, no launch summary


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_launch_help_lists_its_parameters_and_the_graphs(flag: str, tmp_path: Path) -> None:
    res = _run("-m", "realloop.robot.launch.cli", flag, cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    for words in ("graph=NAME", "duration=SECONDS", "nodes.NODE.params.KEY=VALUE", "domain_id=N"):
        assert words in res.stdout
    for graph in ("sim_arm_teleop", "sim_arm_policy", "real_arm_teleop", "real_arm_policy", "sim_quad_teleop"):
        assert f"\n  {graph} " in res.stdout  # listed with its description
    assert not (tmp_path / "outputs").exists()  # nothing launched


def test_node_help_lists_the_kinds_and_each_kinds_parameters() -> None:
    res = _run("-m", "realloop.robot.nodes", "--help")
    assert res.returncode == 0, res.stderr
    for kind in NODES:
        assert f"\n  {kind} " in res.stdout
    res = _run("-m", "realloop.robot.nodes", "camera", "--help")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stdout.startswith("usage: realloop-node camera ")
    assert "source: auto" in res.stdout and "# index (0)" in res.stdout  # the declaration, comments included
    assert "domain_id: null" in res.stdout  # the parameters every kind takes
    # after overrides too, and before --ros-args only
    assert _run("-m", "realloop.robot.nodes", "recorder", "dataset=x.zarr", "-h").returncode == 0
    res = _run("-m", "realloop.robot.nodes")
    assert res.returncode == 2 and "realloop-node --help" in res.stderr


def test_teleop_help_names_its_program() -> None:
    code = "import sys; sys.argv[0] = 'realloop-teleop'; from realloop.robot.nodes.teleop import main; sys.exit(main())"
    res = _run("-c", code, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: realloop-teleop ") and "keymap:" in res.stdout


def test_eval_graph_help_documents_every_option() -> None:
    res = _run("-m", "realloop.policies.evaluate_graph", "--help")
    assert res.returncode == 0, res.stderr
    for option in ("--episodes", "--seed", "--episode-s", "--timeout", "--out", "--domain-id", "--set"):
        assert option in res.stdout
