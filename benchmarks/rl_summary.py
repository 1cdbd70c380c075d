"""Gather realloop-finetune runs (one per seed) into one JSON: each run's evaluations, and the evaluation curve as
mean ± std over the runs at every env-step count they all evaluated at (population std, numpy's default).

Reads ``<run>/finetune_summary.json`` of each run folder; the runs should differ only in their seed. Prints the
curve as a table; writes the JSON with ``--out``.

    python benchmarks/rl_summary.py outputs/rl/cheetah/sac_s0 outputs/rl/cheetah/sac_s1 outputs/rl/cheetah/sac_s2 \\
        --what "SAC from scratch on HalfCheetah-v5" --out benchmarks/results/rl_halfcheetah_sac.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np


def gather(runs: list[Path]) -> dict[str, Any]:
    """The runs' summaries and their evaluation curve (mean ± std over runs per env-step count)."""
    summaries = []
    for run in runs:
        path = run / "finetune_summary.json"
        if not path.exists():
            raise SystemExit(f"rl_summary: {path} does not exist: is {run} a finished realloop-finetune run?")
        summaries.append(json.loads(path.read_text()))
    steps = sorted(set.intersection(*({e["env_steps"] for e in s["evals"]} for s in summaries)))
    curve = []
    for step in steps:
        evals = [next(e for e in s["evals"] if e["env_steps"] == step) for s in summaries]
        returns = np.array([e["return_mean"] for e in evals], dtype=float)
        row: dict[str, Any] = {
            "env_steps": step,
            "runs": len(evals),
            "return_mean": round(float(returns.mean()), 2),
            "return_std": round(float(returns.std()), 2),
        }
        if all(e["success_rate"] is not None for e in evals):
            rates = np.array([e["success_rate"] for e in evals], dtype=float)
            row["success_mean"], row["success_std"] = round(float(rates.mean()), 4), round(float(rates.std()), 4)
        curve.append(row)
    keep = ("out", "seed", "command", "env_steps", "episodes", "updates", "seconds", "train_success_rate", "evals")
    return {
        "env": summaries[0]["env"],
        "algo": summaries[0]["algo"],
        "seeds": [s.get("seed") for s in summaries],
        "eval_episodes": summaries[0]["evals"][0]["episodes"] if summaries[0]["evals"] else None,
        "curve": curve,
        "runs": [{k: s.get(k) for k in keep} for s in summaries],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="realloop-finetune run folders (one per seed)")
    parser.add_argument("--what", required=True, help="one sentence: what the runs measure")
    parser.add_argument("--reference", default=None, help="the published figure compared against, with its source")
    parser.add_argument("--machine", default=None, help="what else ran on the machine meanwhile")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    result = gather(args.runs)
    print(f"{result['algo']} on {result['env']}, seeds {result['seeds']}: evaluation return (and success) mean ± std")
    for row in result["curve"]:
        success = f"  success {row['success_mean']:.0%} ± {row['success_std']:.0%}" if "success_mean" in row else ""
        print(f"  {row['env_steps']:>8} env steps: {row['return_mean']:10.2f} ± {row['return_std']:.2f}{success}")
    if args.out:
        doc = {
            "what": args.what,
            "reference": args.reference,
            "machine": {
                "platform": platform.platform(),
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "note": args.machine,
            },
            **result,
        }
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
