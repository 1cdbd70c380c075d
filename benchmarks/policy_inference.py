"""Policy inference latency: milliseconds per action chunk at batch 1 (one robot), against the arm's control
period (10 Hz = 100 ms) and the time one chunk lasts (n_action_steps = 8 steps x 100 ms = 800 ms).

Policies, built like realloop-train builds them (``configs/policy/<name>.yaml`` through ``build_policy``) for
the arm lift task's features (``observation.state`` (22,), ``observation.environment_state`` (9,), ``action``
(7,), two 96x96 RGB cameras ``observation.images.wrist`` / ``front``):

- ``diffusion``: state-based diffusion policy, DDIM with 10 and with 16 inference steps;
- ``diffusion_image``: state + both cameras (ResNet-18 per camera, 84x84 centre crop), DDIM 10 and 16;
- ``diffusion_image_cpu``: state + both cameras through the small conv net, one observation step, DDIM 10;
- each diffusion policy's one-step student (``policy=diffusion_distill``: the same network, one U-Net pass);
- ``bc``: the MLP behaviour-cloning baseline on state (one forward pass).

Weights are random (latency does not depend on their values); the normaliser gets plausible statistics so
nothing is NaN. A timed call is what the robot's policy runner does per chunk: move a raw observation history
``(1, n_obs_steps, ...)`` to the device, ``predict_action_chunk`` (normalise, encode, denoise, unnormalise) and
copy the chunk back to the CPU (which also waits for CUDA). ``--warmup`` calls are dropped, then
``--repeats`` calls give p50 / p90 / max. "fits in one control period" means p90 < 100 ms: a chunk can be
replanned between two control steps; "fits the chunk" means max < 800 ms: the next chunk is ready before the
current one runs out. Prints a table and writes JSON.

    python benchmarks/policy_inference.py                          # CPU, and CUDA when available
    python benchmarks/policy_inference.py --device cpu --threads 1 --repeats 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from realloop.data import make_feature
from realloop.policies.checkpoint import build_policy
from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.diffusion.distill import DistilledDiffusionPolicy
from realloop.policies.train import compose_config

CONTROL_HZ = 10.0  # the arm tasks' control rate
IMAGE_SHAPE = (96, 96, 3)
VECTORS = {"observation.state": 22, "observation.environment_state": 9, "action": 7}
FEATURES = {
    **{k: make_feature(k, dtype="float32", shape=[n]).to_dict() for k, n in VECTORS.items()},
    **{
        f"observation.images.{cam}": make_feature(
            f"observation.images.{cam}", dtype="uint8", shape=list(IMAGE_SHAPE)
        ).to_dict()
        for cam in ("wrist", "front")
    },
}
DISTILLED = "distilled"  # the policy's one-step student (policies/diffusion/distill.py)
# (label, policy config, DDIM steps, DISTILLED, or None for a one-pass policy)
CASES: list[tuple[str, str, int | str | None]] = [
    ("diffusion state ddim10", "diffusion", 10),
    ("diffusion state ddim16", "diffusion", 16),
    ("diffusion state distilled", "diffusion", DISTILLED),
    ("diffusion image ddim10", "diffusion_image", 10),
    ("diffusion image ddim16", "diffusion_image", 16),
    ("diffusion image distilled", "diffusion_image", DISTILLED),
    ("diffusion image-cpu ddim10", "diffusion_image_cpu", 10),
    ("diffusion image-cpu distilled", "diffusion_image_cpu", DISTILLED),
    ("bc mlp state", "bc", None),
]


def policy_config(name: str, distilled: bool = False) -> dict[str, Any]:
    """The resolved ``policy`` section of the train config with ``policy=<name>``; ``distilled``: of its one-step
    student (the same architecture; no teacher is loaded to build or run it)."""
    cfg = compose_config([f"policy={name}", "dataset.path=unused"])
    out = OmegaConf.to_container(cfg.policy, resolve=True)
    if distilled:
        out.update(_target_=f"{DistilledDiffusionPolicy.__module__}.{DistilledDiffusionPolicy.__name__}", teacher="-")
    return out


def plausible_stats(policy: ChunkPolicy) -> dict[str, dict[str, np.ndarray]]:
    """Statistics of the shapes the normaliser expects: [-1, 1] ranges for vectors, ImageNet-like per-channel
    mean/std for images (``(C, 1, 1)``)."""
    stats = {}
    for key, f in policy.features.items():
        if f.is_image:
            c = f.shape[-1]
            mean, std = np.full((c, 1, 1), 0.45), np.full((c, 1, 1), 0.25)
            stats[key] = {"mean": mean, "std": std, "min": np.zeros((c, 1, 1)), "max": np.ones((c, 1, 1))}
        else:
            shape = tuple(f.shape)
            stats[key] = {
                "mean": np.zeros(shape),
                "std": np.full(shape, 0.5),
                "min": -np.ones(shape),
                "max": np.ones(shape),
            }
    return stats


def observation(policy: ChunkPolicy, seed: int) -> dict[str, torch.Tensor]:
    """A raw batch-1 observation history on the CPU: vectors in [-1, 1], images in [0, 1] as (C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    obs = {}
    for key, shape in policy.obs_shapes.items():
        x = torch.rand((1, policy.n_obs_steps, *shape), generator=g)
        obs[key] = x if policy.features[key].is_image else 2 * x - 1
    return obs


def measure(
    policy: ChunkPolicy, obs: dict[str, torch.Tensor], device: torch.device, warmup: int, repeats: int
) -> dict[str, Any]:
    """Latency in ms of ``repeats`` calls after ``warmup`` untimed ones."""

    def call() -> torch.Tensor:
        batch = {k: v.to(device) for k, v in obs.items()}
        return policy.predict_action_chunk(batch).cpu()  # .cpu() waits for the device

    for _ in range(warmup):
        chunk = call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        chunk = call()
        times.append((time.perf_counter() - start) * 1e3)
    if not torch.isfinite(chunk).all():
        raise SystemExit("the policy produced NaN or inf actions: the normaliser statistics are wrong")
    t = np.asarray(times)
    return {
        "p50_ms": round(float(np.percentile(t, 50)), 3),
        "p90_ms": round(float(np.percentile(t, 90)), 3),
        "max_ms": round(float(t.max()), 3),
        "mean_ms": round(float(t.mean()), 3),
        "chunk_shape": list(chunk.shape),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per case")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per case first")
    p.add_argument("--out", type=Path, default=Path("outputs/bench/policy_inference.json"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available here")
    torch.manual_seed(args.seed)
    period_ms = 1000.0 / CONTROL_HZ
    print(
        f"random weights (latency only); torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"devices {devices}",
        flush=True,
    )

    policies: dict[str, ChunkPolicy] = {}
    results: list[dict[str, Any]] = []
    for device_name in devices:
        device = torch.device(device_name)
        for label, name, ddim in CASES:
            key = f"{name} {ddim}" if ddim == DISTILLED else name
            if key not in policies:
                cfg = policy_config(name, ddim == DISTILLED)
                keys = [*cfg["obs_keys"], cfg.get("action_key", "action")]
                policy = build_policy(cfg, {k: FEATURES[k] for k in keys})
                policy.normalizer.set_stats(plausible_stats(policy))
                policies[key] = policy.eval()
            policy = policies[key].to(device)
            if isinstance(ddim, int):
                policy.num_inference_steps = ddim
            r = measure(policy, observation(policy, args.seed), device, args.warmup, args.repeats)
            budget_ms = policy.n_action_steps * period_ms
            r.update(
                case=label,
                policy=name,
                device=device_name,
                ddim_steps=ddim if isinstance(ddim, int) else None,
                sampler="one-step student" if ddim == DISTILLED else "ddim" if ddim else None,
                params=policy.num_parameters(),
                n_obs_steps=policy.n_obs_steps,
                horizon=policy.horizon,
                n_action_steps=policy.n_action_steps,
                chunk_budget_ms=budget_ms,
                fits_control_period=r["p90_ms"] < period_ms,
                fits_chunk=r["max_ms"] < budget_ms,
            )
            results.append(r)
            fits = "yes" if r["fits_control_period"] else "no"
            print(
                f"  {device_name:4s} {label:28s} p50 {r['p50_ms']:8.2f} ms  p90 {r['p90_ms']:8.2f} ms  "
                f"max {r['max_ms']:8.2f} ms  fits in one control period: {fits}",
                flush=True,
            )
        for policy in policies.values():
            policy.cpu()

    header = (
        f"{'device':6s} {'case':28s} {'params':>8s} {'p50 ms':>9s} {'p90 ms':>9s} {'max ms':>9s}  "
        f"{'fits in one control period':26s}  fits the chunk"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r['device']:6s} {r['case']:28s} {r['params'] / 1e6:7.2f}M {r['p50_ms']:9.2f} {r['p90_ms']:9.2f} "
            f"{r['max_ms']:9.2f}  {'yes' if r['fits_control_period'] else 'no':26s}  "
            f"{'yes' if r['fits_chunk'] else 'no'}"
        )
    print(
        f"control period {period_ms:.0f} ms ({CONTROL_HZ:g} Hz; fits = p90 below it), chunk budget "
        f"{results[0]['chunk_budget_ms']:.0f} ms (n_action_steps x period; fits = max below it); "
        f"batch 1, {args.repeats} repeats after {args.warmup} warm-up calls, random weights"
    )

    report = {
        "benchmark": "policy_inference",
        "note": "random weights: latency only; batch 1 (one robot); time = obs to device + predict_action_chunk + "
        "chunk to CPU",
        "config": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "control_hz": CONTROL_HZ,
            "control_period_ms": period_ms,
            "features": FEATURES,
        },
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = ", ".join(f"{r['device']} {r['case']} {r['p50_ms']:.1f}" for r in results)
    print(f"policy_inference (p50 ms per chunk, batch 1): {summary}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
