"""Cyclone DDS transport following the ROS 2 DDS mapping, so stock ROS 2 nodes and tools see realloop's topics.

Topic ``/a/b`` is DDS topic ``rt/a/b``; type ``pkg/msg/T`` is ``pkg::msg::dds_::T_``, a final (XCDR1) keyless
struct; endpoints carry ``typehash=RIHS01_...;`` in USER_DATA as Jazzy's rmw_cyclonedds does. Samples are
written and taken as raw CDR bytes from :mod:`realloop.robot.msgs`, so the Python IDL serialiser never runs.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import types as pytypes
from collections.abc import Callable

from cyclonedds._clayer import ddspy_take, ddspy_write
from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
from cyclonedds.core import GuardCondition, InstanceState, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as idl
from cyclonedds.idl.annotations import final
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from ..msgs import REGISTRY, dds_type_name, ros_fields, type_hash
from .qos import QoS

# Loopback only, unicast discovery to the local ports: what ROS_LOCALHOST_ONLY=1 means.
LOCALHOST_CONFIG = (
    '<CycloneDDS><Domain Id="any"><General><Interfaces>'
    '<NetworkInterface address="127.0.0.1" multicast="false"/></Interfaces>'
    "<AllowMulticast>false</AllowMulticast></General>"
    "<Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>120</MaxAutoParticipantIndex>"
    '<Peers><Peer address="localhost"/></Peers></Discovery></Domain></CycloneDDS>'
)
_IDL_PRIMITIVES = {
    "bool": bool,
    "byte": idl.uint8,
    "char": idl.uint8,
    "int8": idl.int8,
    "uint8": idl.uint8,
    "int16": idl.int16,
    "uint16": idl.uint16,
    "int32": idl.int32,
    "uint32": idl.uint32,
    "int64": idl.int64,
    "uint64": idl.uint64,
    "float32": idl.float32,
    "float64": idl.float64,
    "string": str,
}
_ANY = SampleState.Any | ViewState.Any | InstanceState.Any
_LOCALHOST_DOMAINS: dict[int, Domain] = {}


@functools.cache
def idl_struct(ros_type: str) -> type:
    """An IdlStruct with the ROS type's DDS name and layout: it gives Cyclone the type name and type
    information for matching; realloop never serialises through it."""
    cls = REGISTRY[ros_type]
    annotations = {}
    for name, ft in ros_fields(cls):
        base = idl_struct(ft.base.__ros_type__) if ft.is_message else _IDL_PRIMITIVES[ft.base]
        if ft.length == -1:
            base = idl.sequence[base]  # type: ignore[misc]  # cyclonedds: an untyped __class_getitem__
        elif ft.length is not None:
            base = idl.array[base, ft.length]  # type: ignore[misc]  # cyclonedds: an untyped __class_getitem__
        annotations[name] = base
    short = ros_type.rsplit("/", 1)[1] + "_"
    struct = pytypes.new_class(
        short,
        (IdlStruct,),
        {"typename": dds_type_name(ros_type)},
        lambda ns: ns.update({"__annotations__": annotations}),
    )
    return final(dataclasses.dataclass(struct))


def dds_topic_name(topic: str) -> str:
    """``/joint_states`` -> ``rt/joint_states``."""
    if not topic.startswith("/"):
        raise ValueError(f"topic {topic!r} must be absolute (start with '/')")
    return "rt" + topic


def dds_qos(qos: QoS, ros_type: str) -> Qos:
    reliability = (
        Policy.Reliability.Reliable(duration(milliseconds=100)) if qos.reliable else Policy.Reliability.BestEffort
    )
    durability = Policy.Durability.TransientLocal if qos.transient_local else Policy.Durability.Volatile
    return Qos(
        reliability,
        durability,
        Policy.History.KeepLast(qos.depth),
        Policy.Userdata(f"typehash={type_hash(ros_type)};".encode()),
    )


class DdsTransport:
    """One DomainParticipant per node; a WaitSet wakes :meth:`wait` on data or :meth:`wake`."""

    def __init__(self, node_name: str, domain_id: int, localhost_only: bool = False):
        self.domain_id = domain_id
        # the Domain holds the config; Cyclone refuses a second one for a live domain id, so nodes in one process
        # share it, and it lives as long as the process
        if localhost_only and domain_id not in _LOCALHOST_DOMAINS:
            _LOCALHOST_DOMAINS[domain_id] = Domain(domain_id, LOCALHOST_CONFIG)
        self.participant: DomainParticipant | None = DomainParticipant(domain_id)  # None once closed
        self._topics: dict[str, Topic] = {}
        self._readers: list[tuple[DataReader, Callable[[bytes], None]]] = []
        self._writers: list[DataWriter] = []
        self._waitset = WaitSet(self.participant)
        self._guard = GuardCondition(self.participant)
        self._waitset.attach(self._guard)
        self._lock = threading.Lock()
        self._publications: BuiltinDataReader | None = None  # discovery, made on first use

    def _live(self) -> DomainParticipant:
        if self.participant is None:
            raise RuntimeError(f"the DDS transport on domain {self.domain_id} is closed")
        return self.participant

    def _topic(self, topic: str, ros_type: str) -> Topic:
        name = dds_topic_name(topic)
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = Topic(self._live(), name, idl_struct(ros_type))
        elif t.typename != dds_type_name(ros_type):
            raise TypeError(f"topic {topic} is already used with type {t.typename}, not {ros_type}")
        return t

    def advertise(self, topic: str, ros_type: str, qos: QoS) -> Callable[[bytes], None]:
        writer = DataWriter(self._live(), self._topic(topic, ros_type), qos=dds_qos(qos, ros_type))
        self._writers.append(writer)
        ref = writer._ref

        def write(data: bytes) -> None:
            pad = -len(data) % 4
            if pad:  # Cyclone wants whole 4-byte words; the header's option bits say how many are padding
                data = data[:3] + bytes([data[3] | pad]) + data[4:] + b"\0" * pad
            ret = ddspy_write(ref, data)
            if ret < 0:
                raise OSError(f"DDS write on {topic} failed with code {ret}")

        return write

    def subscribe(self, topic: str, ros_type: str, qos: QoS, callback: Callable[[bytes], None]) -> None:
        reader = DataReader(self._live(), self._topic(topic, ros_type), qos=dds_qos(qos, ros_type))
        with self._lock:
            self._waitset.attach(ReadCondition(reader, _ANY))
            self._readers.append((reader, callback))

    def wait(self, timeout: float) -> None:
        self._waitset.wait(duration(seconds=max(timeout, 0.0)))
        self._guard.set(False)
        with self._lock:
            readers = list(self._readers)
        for reader, callback in readers:
            while True:
                samples = ddspy_take(reader._ref, _ANY, 64)
                if isinstance(samples, int):
                    raise OSError(f"DDS take failed with code {samples}")
                for data, info in samples:
                    if info.valid_data:
                        callback(data)
                if len(samples) < 64:
                    break

    def count_publishers(self, topic: str) -> int:
        """Live publishers of ``topic`` in other participants that discovery has reported so far."""
        participant = self._live()
        if self._publications is None:
            self._publications = BuiltinDataReader(participant, BuiltinTopicDcpsPublication)
        name, own = dds_topic_name(topic), participant.guid
        return sum(
            1
            for ep in self._publications.read(N=4096)
            if ep.topic_name == name
            and ep.participant_key != own
            and (ep.sample_info is None or ep.sample_info.instance_state == InstanceState.Alive)
        )

    def wake(self) -> None:
        self._guard.set(True)

    def close(self) -> None:
        self._readers.clear()
        self._writers.clear()
        self._topics.clear()
        self._publications = None
        self.participant = None  # Cyclone deletes entities when their Python objects go
