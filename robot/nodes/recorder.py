"""Recorder node: ROS 2 topics into the realloop episode dataset, one episode per start ... success/failure.

Subscribes the topics of its ``streams`` config (``configs/node/recorder.yaml``; a ``streams_file`` YAML
replaces them) and writes each message's sample with its header stamp (receive time on the node clock for
messages without a header) into the dataset at ``dataset`` (created on first use, appended to afterwards).

Commands on ``/recorder/command`` (std_msgs/String; the teleop node's episode keys send them):

- ``start``: begin an episode (ignored while one is being recorded);
- ``success`` / ``failure``: end it and commit it with that outcome;
- ``stop``: end it and commit it with success unknown (null): the episode is kept, unlabelled; label it later
  or filter on ``success`` when training;
- ``discard``: drop it; nothing of it stays in the dataset.

On SIGINT/SIGTERM an episode in progress is discarded, not committed: it has no outcome and may end mid-motion,
and that is what the dataset's crash semantics give after a kill (only the episode in progress is lost), so a
Ctrl-C and a crash leave the same dataset. ``max_episode_s`` commits a too-long episode (success unknown).

``/recorder/status`` (String, JSON, latched) is published on every state change and every ``status_period``
s: state (waiting: for the first frame that gives an image size | idle | recording | stopped: the node exits),
the episode index, per-stream counts (received, written, dropped, non_monotonic, invalid, dead; ``heard``:
messages received in any state) and the last episode's outcome.
Each episode's report (per stream: received, written, estimated dropped, gaps, largest gap, non-monotonic,
invalid, dead and when) goes into its attributes (``attributes.recorder``), into one log line, and into
``<dataset>.recorder.json``.

    realloop-node recorder dataset=outputs/recordings/arm task="lift the cube" source=teleop
    realloop-node recorder dataset=/tmp/x.zarr streams_file=my_streams.yaml auto_start=true max_episode_s=30

A bad configuration (unknown message type or field, a dataset with other features...) exits with code 2 and a
message naming the parameter.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from realloop.data import DatasetLockedError
from realloop.data.schema import SOURCES

from ..msgs import String
from ..node import Node
from ..recorder.recorder import RECORDING, Recorder
from ..recorder.streams import InvalidSample, StreamSpec, parse_streams
from ..transport import QoS
from . import run_node

COMMANDS = ("start", "stop", "success", "failure", "discard")


def load_streams_config(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``streams`` mapping: from ``streams_file`` (a YAML file with a ``streams:`` section, or the mapping
    itself) when given, else the ``streams`` parameter."""
    path = params.get("streams_file")
    if not path:
        return params.get("streams") or {}
    p = Path(str(path))
    if not p.is_file():
        raise ValueError(f"param 'streams_file': no such file {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"param 'streams_file': {p} is not valid YAML: {e}") from None
    if isinstance(doc, Mapping) and isinstance(doc.get("streams"), Mapping):
        doc = doc["streams"]
    if not isinstance(doc, Mapping):
        raise ValueError(f"param 'streams_file': {p} must hold a mapping of streams (or a 'streams:' section)")
    return doc


def load_robot(name: Any) -> tuple[Any, dict[str, Any] | None]:
    """(RobotSpec, the spec file as a mapping) for a robot name or spec path; (None, None) for none."""
    if not name:
        return None, None
    from realloop.robot.spec import load_robot_spec

    spec = load_robot_spec(str(name))
    raw = yaml.safe_load(spec.source.read_text()) if spec.source else {"name": spec.name}
    return spec, raw


def _seconds(params: Mapping[str, Any], key: str, default: float | None) -> float | None:
    v = params.get(key, default)
    if v is None or v == 0:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"param {key!r} must be a number of seconds, got {v!r}") from None
    if f < 0:
        raise ValueError(f"param {key!r} must be >= 0 (0 or null: none), got {v!r}")
    return f


class RecorderNode(Node):
    """The recorder: a :class:`~realloop.robot.recorder.recorder.Recorder` fed by subscriptions."""

    def __init__(
        self,
        name: str = "recorder",
        params: Mapping[str, Any] | None = None,
        *,
        namespace: str = "/",
        remaps: Mapping[str, str] | None = None,
        transport: str = "auto",
        domain_id: int | None = None,
        localhost_only: bool | None = None,
    ) -> None:
        params = dict(params or {})
        # everything that can be wrong with the config is checked before the node joins the DDS domain
        dataset = params.get("dataset")
        if not dataset:
            raise ValueError("param 'dataset' (the dataset directory to record into) is required")
        source = str(params.get("source") or "teleop")
        if source not in SOURCES:
            raise ValueError(f"param 'source' must be one of {SOURCES}, got {source!r}")
        attributes = params.get("attributes") or {}  # a mapping: run_node checks the declared types
        robot, robot_raw = load_robot(params.get("robot"))
        dead_after = _seconds(params, "dead_after", 1.0)
        specs = parse_streams(load_streams_config(params), robot, dead_after)
        topics = _group_by_topic(specs)
        max_s = _seconds(params, "max_episode_s", None)
        self.status_period = _seconds(params, "status_period", 0.5) or 0.5
        if domain_id is None and params.get("domain_id") is not None:
            domain_id = int(params["domain_id"])

        super().__init__(
            name,
            params,
            transport=transport,
            domain_id=domain_id,
            localhost_only=localhost_only,
            namespace=namespace,
            remaps=remaps,
        )
        try:
            self.recorder = Recorder(
                dataset,
                specs,
                robot=robot_raw,
                task=str(params.get("task") or ""),
                source=source,
                attributes=attributes,
                max_episode_s=max_s,
                durable=bool(params.get("durable", True)),
                log=self.log,
                outcomes=bool(params.get("outcomes", True)),
            )
        except DatasetLockedError as e:
            super().close()
            raise ValueError(str(e)) from None
        except OSError as e:  # an unwritable dataset path: a configuration error, not a crash
            super().close()
            raise ValueError(f"param 'dataset': cannot record into {dataset}: {e}") from None
        except BaseException:
            super().close()
            raise
        self.status_pub = self.create_publisher("/recorder/status", String, qos="latched")
        for topic, group in topics.items():
            first = group[0]
            qos = QoS(reliable=first.qos == "reliable", depth=max(s.depth for s in group))
            self.create_subscription(
                topic, first.msg_class, self._make_callback(topic, [s.feature for s in group]), qos=qos
            )
        self.create_subscription("/recorder/command", String, self._on_command)
        self.create_timer(0.1, self._on_timer)
        self._last_status = -1.0
        self.log.info(
            "recording %s into %s (%s)",
            ", ".join(f"{s.topic} -> {s.feature}" for s in specs),
            dataset,
            "auto start" if params.get("auto_start") else "waiting for start on /recorder/command",
        )
        # with use_sim_time the clock reads 0 until the first /clock: start (and stamp) only once it runs
        self._auto_start = bool(params.get("auto_start"))
        if self._auto_start and self._clock_ready():
            self._auto_start = False
            self.recorder.start(self.now())
        self.publish_status()

    # -- callbacks -----------------------------------------------------------------------------------------
    def _make_callback(self, topic: str, features: list[str]) -> Callable[[Any], None]:
        rec = self.recorder

        def on_message(msg: Any) -> None:
            if not self._clock_ready():  # no /clock yet (use_sim_time): no time to stamp it with
                for f in features:
                    rec.heard[f] += 1
                return
            now = self.now()
            changed = False
            for f in features:
                spec = rec.specs[f]
                if not rec.wants_value(f):
                    rec.heard[f] += 1  # idle: counted, not decoded
                    if spec.joiner is not None:  # but a joined command keeps its last arm and gripper values
                        with contextlib.suppress(InvalidSample):
                            spec.value_of(msg, topic)
                    continue
                try:
                    stamp = spec.stamp_of(msg)
                    value = spec.value_of(msg, topic)
                except InvalidSample as e:
                    rec.on_invalid(f, str(e), now)
                    continue
                if value is None:  # a joined command's first gripper value, before any arm command
                    rec.heard[f] += 1
                    continue
                changed |= rec.on_sample(f, stamp, value, now)
            if changed:
                self.publish_status()

        return on_message

    def _on_command(self, msg: String) -> None:
        cmd = msg.data.strip().lower()
        now = self.now()
        rec = self.recorder
        if cmd == "start":
            rec.start(now)
        elif cmd == "stop":
            rec.commit(now, None, ended_by="stop")
        elif cmd in ("success", "failure"):
            rec.commit(now, cmd == "success", ended_by=cmd)
        elif cmd == "discard":
            rec.discard(now, reason="command")
        else:
            self.log.warning("unknown recorder command %r; use one of %s", msg.data, "|".join(COMMANDS))
            return
        self.publish_status()

    def _on_timer(self) -> None:
        now = self.now()
        if self._auto_start:  # timers run once the clock does
            self._auto_start = False
            self.recorder.start(now)
        if self.recorder.tick(now) or now - self._last_status >= self.status_period:
            self.publish_status()

    def publish_status(self) -> None:
        now = self.now()
        self._last_status = now
        self.status_pub.publish(String(json.dumps(self.recorder.status(now))))

    def close(self) -> None:
        rec = getattr(self, "recorder", None)
        if rec is not None:
            if rec.state == RECORDING:
                self.log.info("shutting down while recording: the episode in progress is discarded")
            episodes = len(rec.dataset) if rec.dataset is not None else 0
            rec.close(self.now())
            status = rec.status(self.now())
            status.update(state="stopped", episodes=episodes)  # the count before the dataset was released
            self.status_pub.publish(String(json.dumps(status)))
            del self.recorder  # closed: a second close() finds none
        super().close()


def _group_by_topic(specs: list[StreamSpec]) -> dict[str, list[StreamSpec]]:
    """One subscription per topic (a JointState feeds position and velocity streams: decoded once)."""
    topics: dict[str, list[StreamSpec]] = {}
    for s, topic in ((spec, t) for spec in specs for t in spec.topics):
        group = topics.setdefault(topic, [])
        if group and (group[0].msg_type != s.msg_type or group[0].qos != s.qos):
            raise ValueError(
                f"streams {group[0].name} and {s.name} subscribe {topic} with different "
                f"{'types' if group[0].msg_type != s.msg_type else 'qos'}"
            )
        group.append(s)
    return topics


def main(argv: list[str] | None = None) -> int:
    return run_node("recorder", RecorderNode, argv)
