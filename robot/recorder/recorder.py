"""The recorder's episode logic, free of any transport: idle -> recording -> commit (success true, false or
unknown) or discard, with per-stream accounting of what arrived and what did not.

Every call takes ``now``, the node clock's time in seconds (wall time, or sim time with ``use_sim_time``): it
stamps the streams that have no header, and it times silences. Stamps of header streams are the headers'.

Per stream and episode the recorder counts:

- ``received``: messages that arrived while recording; ``written``: samples stored;
- ``non_monotonic``: samples whose stamp does not increase (duplicates, a publisher's clock going back): dropped,
  never written, since the dataset's timestamps increase strictly. Messages stamped on receipt that share one
  reading of a stepping clock (sim time advances in /clock ticks) are not duplicates: they are written in arrival
  order, 1 us apart;
- ``invalid``: messages that do not fit the stream (wrong size, missing joint, undecodable image): not written;
- with an expected rate: ``dropped``, the estimated missing samples: in every stamp gap longer than 1.5 periods,
  ``round(gap / period) - 1``; ``gaps``, how many such gaps; and ``largest_gap_s`` for every stream;
- ``dead``: the stream fell silent for ``dead_after`` seconds (receive time) at least once; ``silences`` lists
  each silence as ``[from, to]`` seconds after the episode start (``to`` null: still silent at the end).

Nothing is interpolated: a gap stays a gap in the data, and the report says where. The report goes into the
committed episode's attributes (``attributes.recorder``), into one summary line in the log, and into
``<dataset>.recorder.json`` (one entry per episode, discarded ones included).

Outcomes (``outcomes=True``, with an ``action`` stream): at commit the episode also gets, stamped with each action
sample, ``next.done`` (true at the last action) and, when its success is known, ``next.reward`` (1.0 at the last
action of a successful episode, else 0.0), ``next.success`` and ``next.terminated`` (true at the last action of a
successful episode: a failure or a stop is truncated). What reinforcement learning reads (policies/rl/buffer.py);
a new dataset gets those features, an existing one is written the ones it has.

Image streams may leave their size open (``shape: null``): the first frame fixes it. The dataset is then
created once every such stream has sent a frame; a ``start`` that comes before waits for it (state
``waiting``). A dataset that exists already is appended to, and must have the streams' features.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realloop.data import Dataset, DatasetWriteError, EpisodeWriter
from realloop.data.schema import Feature, make_feature

from .streams import EncodedImage, StreamSpec

IDLE, WAITING, RECORDING = "idle", "waiting", "recording"
GAP_FACTOR = 1.5  # a stamp gap longer than this many periods means samples went missing
BATCH = 64  # numeric samples buffered per stream before they go to the writer (one call instead of 64)
RECEIVE_TIE_S = 1e-6  # spacing of receive stamps that share one clock reading
RECEIVE_TIE_WINDOW_S = 1e-3  # how far a receive stamp may sit behind the last one and still be a tie
OUTCOMES = {  # written at commit, stamped with the action samples
    "next.reward": "float32",
    "next.success": "bool",
    "next.done": "bool",
    "next.terminated": "bool",
}


def report_path_for(dataset: str | os.PathLike[str]) -> Path:
    """``<dataset>.recorder.json`` next to the dataset."""
    p = Path(dataset)
    return p.with_name(p.name + ".recorder.json")


@dataclass
class StreamStats:
    """What one stream delivered during one episode."""

    spec: StreamSpec
    start: float  # episode start, node clock
    received: int = 0
    written: int = 0
    non_monotonic: int = 0
    invalid: int = 0
    dropped: int = 0
    gaps: int = 0
    largest_gap: float = 0.0
    first: float | None = None
    last: float | None = None
    last_receive: float | None = None
    dead: bool = False  # silent right now
    silences: list[list[float | None]] = field(default_factory=list)

    def accept(self, t: float) -> bool:
        """Account for a sample stamped ``t``; False if it must not be written (its stamp does not increase)."""
        if self.last is not None:
            dt = t - self.last
            if dt <= 0:
                self.non_monotonic += 1
                return False
            self.largest_gap = max(self.largest_gap, dt)
            period = self.spec.period
            if period and dt > GAP_FACTOR * period:
                self.gaps += 1
                self.dropped += max(round(dt / period) - 1, 1)
        else:
            self.first = t
        self.last = t
        self.written += 1
        return True

    def heard(self, now: float) -> bool:
        """A message arrived at ``now``; True if that ends a silence."""
        self.last_receive = now
        if self.dead:
            self.dead = False
            self.silences[-1][1] = round(now - self.start, 3)
            return True
        return False

    def check_silence(self, now: float) -> bool:
        """True if the stream has just been silent for its ``dead_after``."""
        limit = self.spec.dead_after
        if limit is None or self.dead:
            return False
        since = self.last_receive if self.last_receive is not None else self.start
        if now - since > limit:
            self.dead = True
            self.silences.append([round(since - self.start, 3), None])
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            **self.spec.describe(),
            "received": self.received,
            "written": self.written,
            "non_monotonic": self.non_monotonic,
            "invalid": self.invalid,
            "largest_gap_s": round(self.largest_gap, 6),
            "first": self.first,
            "last": self.last,
            "dead": bool(self.silences),
            "silences": [list(s) for s in self.silences],
        }
        if self.spec.period:
            d["dropped"] = self.dropped
            d["gaps"] = self.gaps
        if self.written > 1 and self.last is not None and self.first is not None and self.last > self.first:
            d["rate_hz"] = round((self.written - 1) / (self.last - self.first), 3)
        return d

    def status(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "written": self.written,
            "dropped": self.dropped,
            "non_monotonic": self.non_monotonic,
            "invalid": self.invalid,
            "dead": self.dead,
        }


class Recorder:
    """Records the streams of ``specs`` into the dataset at ``path``, one episode at a time.

    ``robot`` is the robot spec as a mapping (stored in a new dataset's root; its ``name`` goes into every
    episode); ``task``, ``source`` and ``attributes`` go into every episode's metadata; ``outcomes`` writes the
    ``next.*`` outcome streams at commit (see the module doc).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        specs: Sequence[StreamSpec],
        *,
        robot: Mapping[str, Any] | None = None,
        task: str = "",
        source: str = "teleop",
        attributes: Mapping[str, Any] | None = None,
        max_episode_s: float | None = None,
        report_path: str | os.PathLike[str] | None = None,
        durable: bool = True,
        log: logging.Logger | None = None,
        outcomes: bool = True,
    ) -> None:
        self.path = Path(path)
        self.specs: dict[str, StreamSpec] = {s.feature: s for s in specs}
        self.robot = dict(robot) if robot else None
        self.task, self.source = task, source
        self.attributes = dict(attributes or {})
        self.max_episode_s = max_episode_s if max_episode_s and max_episode_s > 0 else None
        self.report_path = Path(report_path) if report_path else report_path_for(self.path)
        self.durable = durable
        self.log = log or logging.getLogger("recorder")
        self.dataset: Dataset | None = None
        self.episode: EpisodeWriter | None = None
        self.stats: dict[str, StreamStats] = {}
        self.heard: dict[str, int] = dict.fromkeys(self.specs, 0)  # messages ever received, in any state
        self.start_time: float | None = None
        self.start_pending = False
        self.next_index: int | None = None
        self.last: dict[str, Any] | None = None  # outcome of the last episode
        self.reports: list[dict[str, Any]] = []
        self._latched: dict[str, tuple[float, Any]] = {}
        self._buffers: dict[str, tuple[list[float], list[np.ndarray]]] = {}
        self._warned: set[str] = set()
        # the outcome features written at commit (those no stream records; an existing dataset's own choice)
        self.outcomes = [n for n in OUTCOMES if n not in self.specs] if outcomes and "action" in self.specs else []
        self._action_stamps: list[float] = []
        self._open_existing_or_create()

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.episode is not None:
            return RECORDING
        return IDLE if self.dataset is not None else WAITING

    @property
    def waiting_for(self) -> list[str]:
        """Streams whose first frame is needed (to learn the image size) before the dataset can be created."""
        return [f for f, s in self.specs.items() if s.shape is None]

    def wants_value(self, feature: str) -> bool:
        """Whether a message of this stream is used now (else the caller may skip decoding it)."""
        spec = self.specs[feature]
        return self.episode is not None or spec.shape is None or spec.latch

    # -- dataset -------------------------------------------------------------------------------------------
    def _open_existing_or_create(self) -> None:
        if self.path.exists() and any(self.path.iterdir()):
            ds = Dataset.open(self.path, mode="a", durable=self.durable)
            try:
                self._adopt_features(ds)
                self.outcomes = [n for n in self.outcomes if n in ds.features]
            except ValueError:
                ds.close()
                raise
            self.dataset = ds
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails now, not mid-run
            self._create_if_ready()

    def _adopt_features(self, ds: Dataset) -> None:
        """Check the streams against an existing dataset's features (and take image sizes from it)."""
        for name, spec in list(self.specs.items()):
            have = ds.features.get(name)
            if have is None:
                raise ValueError(
                    f"{self.path} has no feature {name!r} (its features: {sorted(ds.features)}); features cannot "
                    "be added to a dataset: record into a new dataset, or remove the stream"
                )
            if spec.shape is None:
                spec = self.specs[name] = spec.with_shape(have.shape)
            want = spec.feature_def().to_dict()
            got = have.to_dict()
            if want != got:
                diff = "; ".join(
                    f"{k}: dataset {got.get(k)!r}, config {want.get(k)!r}"
                    for k in sorted(set(want) | set(got))
                    if want.get(k) != got.get(k)
                )
                raise ValueError(
                    f"{self.path}: feature {name!r} differs from stream {spec.name} ({diff}); record "
                    "into a new dataset or make the config match"
                )

    def _create_if_ready(self) -> bool:
        if self.dataset is not None:
            return True
        if self.waiting_for:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        features: list[Feature] = [s.feature_def() for s in self.specs.values()]
        features += [make_feature(n, dtype=OUTCOMES[n], shape=()) for n in self.outcomes]
        self.dataset = Dataset.create(
            self.path,
            features,
            robot=self.robot,
            durable=self.durable,
            attributes={
                "recorded_by": "realloop recorder",
                "streams": {f: s.describe() for f, s in self.specs.items()},
            },
        )
        self.log.info("created dataset %s (%s)", self.path, ", ".join(self.specs))
        return True

    # -- samples -------------------------------------------------------------------------------------------
    def on_sample(self, feature: str, stamp: float | None, value: np.ndarray | EncodedImage, now: float) -> bool:
        """A message's sample arrived at ``now`` (``stamp`` None: stamp it ``now``). Returns True if the state
        changed (the dataset got created, a pending episode started, a dead stream came back)."""
        self.heard[feature] += 1
        spec = self.specs[feature]
        changed = False
        if spec.shape is None:
            self.specs[feature] = spec.with_shape(value.shape)
            self.log.info("stream %s: frames are %dx%d", spec.name, value.shape[1], value.shape[0])
            if self._create_if_ready():
                changed = True
                if self.start_pending:
                    self.start(now)  # and this frame is its first
        t = now if stamp is None else stamp
        if spec.latch:
            self._latched[feature] = (t, value)
        if self.episode is None:
            return changed
        st = self.stats[feature]
        st.received += 1
        if st.heard(now):
            changed = True
            a, b = st.silences[-1]
            self.log.info("stream %s is back after %.1f s of silence", spec.name, (b or 0.0) - (a or 0.0))
        if stamp is None and st.last is not None and 0.0 <= st.last - t < RECEIVE_TIE_WINDOW_S:
            # stamped on receipt within one tick of a stepping clock (/clock with use_sim_time): distinct messages
            # in arrival order, not duplicates to drop
            t = st.last + RECEIVE_TIE_S
        if st.accept(t):
            self._write(feature, t, value, now)
        return changed

    def on_invalid(self, feature: str, reason: str, now: float) -> None:
        """A message that does not fit its stream arrived (counted, not written; the first one is logged)."""
        self.heard[feature] += 1
        if self.episode is not None:
            st = self.stats[feature]
            st.received += 1
            st.invalid += 1
            st.heard(now)
        if feature not in self._warned:
            self._warned.add(feature)
            self.log.warning(
                "stream %s: %s (such messages are counted as invalid and not recorded)",
                self.specs[feature].name,
                reason,
            )

    def _write(self, feature: str, t: float, value: np.ndarray | EncodedImage, now: float) -> None:
        assert self.episode is not None
        try:
            if isinstance(value, EncodedImage):
                self.episode.add_encoded(feature, t, value.data)
            elif self.specs[feature].is_image:
                self.episode.add(feature, t, value)  # encoded on the writer's thread pool
            else:
                if feature == "action":
                    self._action_stamps.append(t)
                ts, vals = self._buffers.setdefault(feature, ([], []))
                ts.append(t)
                vals.append(value)
                if len(ts) >= BATCH:
                    self._flush(feature)
        except DatasetWriteError as e:
            self._write_failed(e, now)

    def _flush(self, feature: str | None = None) -> None:
        assert self.episode is not None
        for name in [feature] if feature else list(self._buffers):
            ts, vals = self._buffers.pop(name, ([], []))
            if ts:
                self.episode.extend(name, ts, np.stack(vals))

    def _write_failed(self, e: DatasetWriteError, now: float) -> None:
        """The writer discarded the episode (disk full...): report it and go idle."""
        self.log.error("%s", e)
        self._finish(now, outcome="write_error", success=None, ended_by="write_error", error=str(e))

    # -- commands ------------------------------------------------------------------------------------------
    def start(self, now: float, **attributes: Any) -> bool:
        """Begin an episode (extra ``attributes`` go into its metadata). False if one is being recorded; while
        the dataset waits for image sizes, the episode starts as soon as it can."""
        if self.episode is not None:
            self.log.warning("start ignored: already recording an episode (stop, success, failure or discard it)")
            return False
        if self.dataset is None:
            self.start_pending = True
            self.log.info(
                "start: waiting for the first frame of %s to learn the image size",
                ", ".join(self.specs[f].topic for f in self.waiting_for),
            )
            return False
        self.start_pending = False
        idx = self.dataset.episode_indices
        self.next_index = idx[-1] + 1 if idx else 0
        meta = {
            **self.attributes,
            **attributes,
            "topics": {f: s.topic for f, s in self.specs.items()},
            "timestamp_source": {f: s.timestamp_source for f, s in self.specs.items()},
        }
        self.episode = self.dataset.begin_episode(
            task=self.task, source=self.source, robot=(self.robot or {}).get("name"), **meta
        )
        self.start_time = now
        self.stats = {f: StreamStats(s, now) for f, s in self.specs.items()}
        self._buffers = {}
        self._warned = set()
        self._action_stamps = []
        self.log.info("recording episode %d", self.next_index)
        for f, (_t, value) in self._latched.items():
            st = self.stats[f]
            if st.accept(now):  # the value that holds at the start, stamped at the start
                self._write(f, now, value, now)
        return True

    def commit(self, now: float, success: bool | None = None, ended_by: str = "command") -> dict[str, Any] | None:
        """End the episode and keep it (``success`` true, false or None for unknown); returns its report."""
        if self.episode is None:
            self.start_pending = False
            self.log.warning("nothing to commit: not recording")
            return None
        self.tick(now, check_duration=False)
        try:
            self._flush()
            self._write_outcomes(success)
        except DatasetWriteError as e:
            self._write_failed(e, now)
            return self.last
        if not self.episode.streams:
            self.log.warning("the episode has no samples: discarded")
            return self.discard(now, reason="no samples")
        report = self._report(now, ended_by)
        try:
            index = self.episode.commit(success, attributes={**self.episode.meta["attributes"], "recorder": report})
        except DatasetWriteError as e:
            self._write_failed(e, now)
            return self.last
        return self._finish(now, outcome="committed", success=success, ended_by=ended_by, index=index)

    def _write_outcomes(self, success: bool | None) -> None:
        """The ``next.*`` outcome streams, stamped with the episode's action samples (see the module doc)."""
        assert self.episode is not None
        if not self.outcomes or not self._action_stamps:
            return
        stamps = np.asarray(self._action_stamps)
        last = np.arange(len(stamps)) == len(stamps) - 1
        values = {"next.done": last}
        if success is not None:
            reached = last & bool(success)
            values.update(
                {"next.reward": reached.astype(np.float32), "next.success": reached, "next.terminated": reached}
            )
        for name, value in values.items():
            if name in self.outcomes:
                self.episode.extend(name, stamps, value)

    def discard(self, now: float, reason: str = "command") -> dict[str, Any] | None:
        """Drop the episode in progress: nothing of it stays in the dataset (the report still says why)."""
        self.start_pending = False
        if self.episode is None:
            self.log.warning("nothing to discard: not recording")
            return None
        self.tick(now, check_duration=False)
        self.episode.discard()
        return self._finish(now, outcome="discarded", success=None, ended_by=reason)

    def tick(self, now: float, check_duration: bool = True) -> bool:
        """Periodic checks while recording: silent streams, the episode's length. True if the state changed."""
        if self.episode is None:
            return False
        changed = False
        for st in self.stats.values():
            if st.check_silence(now):
                changed = True
                self.log.warning(
                    "stream %s is dead: no message on %s for %.1f s",
                    st.spec.name,
                    st.spec.topic,
                    now - (st.last_receive if st.last_receive is not None else st.start),
                )
        if (
            check_duration
            and self.max_episode_s
            and self.start_time is not None
            and now - self.start_time >= self.max_episode_s
        ):
            self.log.info("episode reached max_episode_s = %g s", self.max_episode_s)
            self.commit(now, None, ended_by="max_episode_s")
            changed = True
        return changed

    def close(self, now: float) -> None:
        """Discard an episode in progress (an unfinished episode has no outcome: as after a crash, it is not
        kept) and release the dataset."""
        if self.episode is not None:
            self.discard(now, reason="shutdown")
        if self.dataset is not None:
            self.dataset.close()
            self.dataset = None

    # -- reports -------------------------------------------------------------------------------------------
    def _report(self, now: float, ended_by: str) -> dict[str, Any]:
        start = self.start_time if self.start_time is not None else now
        return {
            "duration_s": round(now - start, 3),
            "ended_by": ended_by,
            "streams": {f: st.to_dict() for f, st in self.stats.items()},
        }

    def _finish(
        self,
        now: float,
        *,
        outcome: str,
        success: bool | None,
        ended_by: str,
        index: int | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        report = {
            "episode": index,
            "outcome": outcome,
            "success": success,
            "task": self.task,
            "source": self.source,
            **self._report(now, ended_by),
            "finished_at": time.time(),
        }
        if error:
            report["error"] = error
        self.episode = None
        self.start_time = None
        self._buffers = {}
        self.last = report
        self.reports.append(report)
        problems = any(
            s["dead"] or s.get("dropped") or s["invalid"] or s["non_monotonic"] for s in report["streams"].values()
        )
        self.log.log(
            logging.WARNING if problems or outcome == "write_error" else logging.INFO, "%s", summary_line(report)
        )
        try:
            append_report(self.report_path, report, self.path)
        except OSError as e:
            self.log.error("could not write %s: %s", self.report_path, e)
        return report

    def status(self, now: float) -> dict[str, Any]:
        """The state for ``/recorder/status``: state, episode index, per-stream counts."""
        recording = self.episode is not None
        st: dict[str, Any] = {
            "state": self.state,
            "dataset": str(self.path),
            "episode": self.next_index if recording else None,
            "episodes": len(self.dataset) if self.dataset is not None else 0,
            "elapsed_s": round(now - self.start_time, 3) if recording and self.start_time is not None else None,
            "streams": {
                f: {**(self.stats[f].status() if recording else {}), "heard": self.heard[f]} for f in self.specs
            },
            "last": None
            if self.last is None
            else {k: self.last[k] for k in ("episode", "outcome", "success", "ended_by")},
        }
        if self.state == WAITING:
            st["waiting_for"] = self.waiting_for
            st["start_pending"] = self.start_pending
        return st


def summary_line(report: Mapping[str, Any]) -> str:
    """One line per episode: outcome, length, and per stream what arrived and what went wrong."""
    head = {
        "committed": f"episode {report['episode']} committed",
        "discarded": "episode discarded",
        "write_error": "episode lost (write error)",
    }.get(report["outcome"], report["outcome"])
    succ = {True: "success, ", False: "failure, ", None: "success unknown, "}[report["success"]]
    if report["outcome"] != "committed":
        succ = ""
    parts = []
    for f, s in report["streams"].items():
        txt = f"{f} {s['written']}/{s['received']}"
        extra = []
        if s.get("dropped"):
            extra.append(f"~{s['dropped']} dropped in {s['gaps']} gap{'s' if s['gaps'] != 1 else ''}")
        if s["largest_gap_s"] and s.get("gaps"):
            extra.append(f"largest gap {s['largest_gap_s']:.3f} s")
        if s["non_monotonic"]:
            extra.append(f"{s['non_monotonic']} non-monotonic")
        if s["invalid"]:
            extra.append(f"{s['invalid']} invalid")
        if s["dead"]:
            extra.append("DEAD " + ", ".join(f"{a}-{'end' if b is None else b} s" for a, b in s["silences"]))
        parts.append(txt + (f" ({'; '.join(extra)})" if extra else ""))
    return f"{head} ({succ}{report['duration_s']:.1f} s, ended by {report['ended_by']}): " + ", ".join(parts)


def append_report(path: Path, report: Mapping[str, Any], dataset: Path) -> None:
    """Add an episode report to the JSON file (rewritten atomically: a crash leaves the old or the new one)."""
    doc: dict[str, Any] = {"dataset": str(dataset), "episodes": []}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if isinstance(old, dict) and isinstance(old.get("episodes"), list):
                doc = old
        except ValueError:
            path.rename(path.with_name(path.name + f".unreadable-{int(time.time())}"))
    doc["episodes"].append(dict(report))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
