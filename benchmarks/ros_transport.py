"""ROS 2 transport figures: latency and throughput between two processes over Cyclone DDS on loopback, and the
codec's serialisation time per message.

Streams, one after the other, each from a publisher process to this (subscriber) process on a private domain
with localhost-only discovery, with the stack's QoS:
  image_raw     640x480 bgr8 sensor_msgs/Image at 30 Hz (best effort, depth 5)
  image_jpeg    the same textured frame as a JPEG CompressedImage at 30 Hz (best effort, depth 5)
  joint_states  7-joint sensor_msgs/JointState at 500 Hz (reliable, depth 10)
The publisher stamps each message with ``time.time()`` just before ``publish`` (so latency includes encoding,
DDS, decoding and the callback; both processes read the same clock) and numbers it in ``header.frame_id``; the
subscriber computes latency percentiles, the achieved rate (msgs/s, MB/s of CDR payload) and drops. A warm-up
second before each stream lets discovery finish and is not counted.

In-process serialisation: ``encode``/``decode`` per message for each type (median of repeats), beside
`rosbags`' serialiser and OpenCV's JPEG encode/decode of the frame for scale.

    python benchmarks/ros_transport.py                   # 10 s per stream
    python benchmarks/ros_transport.py --seconds 2       # a quick check that it works
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from realloop.robot import msgs
from realloop.robot.msgs import decode, encode
from realloop.robot.node import Node

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3", "finger_left"]
STREAMS: dict[str, dict[str, Any]] = {
    "image_raw": {"topic": "/bench/image_raw", "type": msgs.Image, "rate_hz": 30.0, "qos": "sensor"},
    "image_jpeg": {
        "topic": "/bench/image_raw/compressed",
        "type": msgs.CompressedImage,
        "rate_hz": 30.0,
        "qos": "sensor",
    },
    "joint_states": {"topic": "/bench/joint_states", "type": msgs.JointState, "rate_hz": 500.0, "qos": "reliable"},
}
WARMUP = "warmup"


def camera_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A textured frame (multi-scale noise, like a cluttered scene) that costs JPEG what real images do."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for scale in (4, 16, 64, 256):
        small = rng.normal(size=(max(2, h // scale), max(2, w // scale), 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * (scale**0.5) * 6
    return np.clip(img + 128, 0, 255).astype(np.uint8)


def sample_messages(width: int, height: int) -> dict[str, Any]:
    """One message of each benchmarked type (the transport streams' templates among them)."""
    frame = camera_scene(height, width)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    rng = np.random.default_rng(0)
    hdr = msgs.header(time.time(), "camera_optical_frame")
    n = len(JOINTS)
    points = [
        msgs.JointTrajectoryPoint(rng.normal(size=6), rng.normal(size=6), time_from_start=msgs.Duration(0, k))
        for k in range(10)
    ]
    return {
        "image_raw": msgs.Image(hdr, height, width, "bgr8", 0, 3 * width, frame.tobytes()),
        "image_jpeg": msgs.CompressedImage(hdr, "bgr8; jpeg compressed bgr8", jpeg.tobytes()),
        "joint_states": msgs.JointState(
            msgs.header(time.time()), JOINTS, rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
        ),
        "camera_info": msgs.CameraInfo(
            hdr, height, width, "plumb_bob", np.zeros(5), np.eye(3).ravel(), np.eye(3).ravel(), np.zeros(12)
        ),
        "imu": msgs.Imu(msgs.header(time.time(), "imu")),
        "twist_stamped": msgs.TwistStamped(msgs.header(time.time(), "base")),
        "float64_multi_array": msgs.Float64MultiArray(data=rng.normal(size=n)),
        "joint_trajectory_10pt": msgs.JointTrajectory(msgs.header(time.time()), JOINTS[:6], points),
        "clock": msgs.Clock(msgs.Time.from_sec(time.time())),
    }


# --- serialisation ----------------------------------------------------------------------------------------------


def per_call_us(fn: Any, budget_s: float = 0.2, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean time per call, with enough calls to fill ``budget_s``."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, int(budget_s / repeats / one))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return round(float(np.median(times)) * 1e6, 2)


def serialisation_table(samples: dict[str, Any]) -> dict[str, dict[str, float]]:
    """encode/decode µs per message for each type, rosbags' serialise beside it."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    out = {}
    for name, msg in samples.items():
        data = encode(msg)
        cls, typ = type(msg), msgs.ros_type_of(msg)
        rb = ts.deserialize_cdr(data, typ)
        out[name] = {
            "bytes": len(data),
            "encode_us": per_call_us(lambda m=msg: encode(m)),
            "decode_us": per_call_us(lambda c=cls, d=data: decode(c, d)),
            "rosbags_serialize_us": per_call_us(lambda r=rb, t=typ: ts.serialize_cdr(r, t, little_endian=True)),
        }
    frame = np.frombuffer(samples["image_raw"].data, np.uint8).reshape(samples["image_raw"].height, -1, 3)
    jpeg = np.frombuffer(samples["image_jpeg"].data, np.uint8)
    out["opencv_jpeg_q90"] = {
        "bytes": int(jpeg.size),
        "encode_us": per_call_us(lambda: cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])),
        "decode_us": per_call_us(lambda: cv2.imdecode(jpeg, cv2.IMREAD_COLOR)),
    }
    return out


# --- transport --------------------------------------------------------------------------------------------------


def publisher(args: argparse.Namespace) -> None:
    """Child process: publish one stream at its rate for warm-up + measured seconds; print a JSON summary."""
    spec = STREAMS[args.stream]
    template = sample_messages(args.width, args.height)[args.stream]
    node = Node("bench_publisher", transport="dds", domain_id=args.domain, localhost_only=True)
    pub = node.create_publisher(spec["topic"], spec["type"], qos=spec["qos"])
    period = 1.0 / spec["rate_hz"]
    start = time.perf_counter()
    measure_from = start + args.warmup
    end = measure_from + args.seconds
    seq, sent, late, publish_s = 0, 0, 0, 0.0
    due = start
    while due < end:
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        elif now - due > period:
            late += 1  # the publisher itself could not keep the rate (CPU-bound)
        measured = due >= measure_from
        template.header = msgs.Header(msgs.Time.from_sec(time.time()), str(seq) if measured else WARMUP)
        t0 = time.perf_counter()
        pub.publish(template)
        if measured:
            publish_s += time.perf_counter() - t0
            seq += 1
            sent += 1
        due += period
    node.close()
    print(
        json.dumps({"sent": sent, "late": late, "publish_call_us": round(1e6 * publish_s / max(sent, 1), 1)}),
        flush=True,
    )


def latency_summary(lat_ms: np.ndarray) -> dict[str, float | None]:
    if not len(lat_ms):
        return dict.fromkeys(("p50", "p90", "p99", "max", "mean"))
    out = {f"p{q}": round(float(np.percentile(lat_ms, q)), 3) for q in (50, 90, 99)}
    return {**out, "max": round(float(lat_ms.max()), 3), "mean": round(float(lat_ms.mean()), 3)}


def run_stream(name: str, args: argparse.Namespace, payload_bytes: int) -> dict[str, Any]:
    """Subscribe here, publish from a child process, and summarise what arrived."""
    spec = STREAMS[name]
    node = Node("bench_subscriber", transport="dds", domain_id=args.domain, localhost_only=True)
    received: list[tuple[int, float, float]] = []  # (seq, latency s, arrival time)

    def on_msg(msg: Any) -> None:
        now = time.time()
        if msg.header.frame_id != WARMUP:
            received.append((int(msg.header.frame_id), now - msg.header.stamp.to_sec(), now))

    node.create_subscription(spec["topic"], spec["type"], on_msg, qos=spec["qos"])
    cmd = [
        sys.executable,
        __file__,
        "--role",
        "publisher",
        "--stream",
        name,
        "--domain",
        str(args.domain),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--width",
        str(args.width),
        "--height",
        str(args.height),
    ]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    node.spin_until(lambda: child.poll() is not None, timeout=args.seconds + args.warmup + 60)
    node.spin(0.5)  # drain what is still in flight
    node.close()
    out, _ = child.communicate(timeout=30)
    if child.returncode != 0:
        raise RuntimeError(f"publisher for {name} failed with exit code {child.returncode}")
    pub = json.loads(out.strip().splitlines()[-1])
    seqs = {s for s, _, _ in received}
    lat_ms = np.array([lat for _, lat, _ in received]) * 1e3
    arrivals = np.array([t for _, _, t in received])
    span = float(arrivals.max() - arrivals.min()) if len(arrivals) > 1 else float("nan")
    rate = (len(received) - 1) / span if len(received) > 1 else 0.0
    return {
        "stream": name,
        "type": msgs.ros_type_of(spec["type"]),
        "qos": spec["qos"],
        "target_hz": spec["rate_hz"],
        "payload_bytes": payload_bytes,
        "sent": pub["sent"],
        "received": len(received),
        "duplicates": len(received) - len(seqs),
        "drops": pub["sent"] - len(seqs),
        "drop_percent": round(100.0 * (pub["sent"] - len(seqs)) / max(pub["sent"], 1), 2),
        "publisher_late": pub["late"],
        "msgs_per_s": round(rate, 1),
        "mb_per_s": round(rate * payload_bytes / 1e6, 2),
        "latency_ms": latency_summary(lat_ms),
        "publish_call_us": pub["publish_call_us"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    samples = sample_messages(args.width, args.height)
    result: dict[str, Any] = {
        "benchmark": "ros_transport",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "transport": "cyclonedds (localhost only, loopback)",
        "resolution": f"{args.width}x{args.height}",
        "seconds_per_stream": args.seconds,
        "streams": [run_stream(s, args, len(encode(samples[s]))) for s in args.streams],
    }
    if not args.no_serialisation:
        result["serialisation"] = serialisation_table(samples)
    return result


def _ms(v: float | None) -> str:
    return f"{v:7.2f}" if v is not None else f"{'-':>7}"


def print_tables(r: dict[str, Any]) -> None:
    print(
        f"{'stream':>13} {'Hz':>5} {'KB/msg':>8} {'msgs/s':>7} {'MB/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'drops':>6} {'pub us':>7}"
    )
    for s in r["streams"]:
        lat = s["latency_ms"]
        print(
            f"{s['stream']:>13} {s['target_hz']:5.0f} {s['payload_bytes'] / 1e3:8.1f} {s['msgs_per_s']:7.1f} "
            f"{s['mb_per_s']:7.2f} {_ms(lat['p50'])} {_ms(lat['p99'])} {_ms(lat['max'])} "
            f"{s['drops']:6d} {s['publish_call_us']:7.1f}"
        )
    if "serialisation" in r:
        print(f"\n{'message':>22} {'bytes':>8} {'encode us':>10} {'decode us':>10} {'rosbags us':>11}")
        for name, v in r["serialisation"].items():
            rb = v.get("rosbags_serialize_us")
            print(
                f"{name:>22} {v['bytes']:8d} {v['encode_us']:10.2f} {v['decode_us']:10.2f} "
                f"{f'{rb:11.2f}' if rb is not None else '          -'}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per stream")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (discovery)")
    p.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--domain", type=int, default=150 + os.getpid() % 80, help="private DDS domain id")
    p.add_argument("--no-serialisation", action="store_true", help="skip the in-process codec timings")
    p.add_argument("--out", default="outputs/bench/ros_transport.json")
    p.add_argument("--role", default="subscriber", choices=["subscriber", "publisher"], help=argparse.SUPPRESS)
    p.add_argument("--stream", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "publisher":
        publisher(args)
        return
    r = run(args)
    print_tables(r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(r, indent=2))
    summary = ", ".join(
        f"{s['stream']} p50 {s['latency_ms']['p50']} ms p99 {s['latency_ms']['p99']} ms {s['msgs_per_s']} msg/s"
        for s in r["streams"]
    )
    print(f"ros transport: {summary} -> {args.out}")


if __name__ == "__main__":
    main()
