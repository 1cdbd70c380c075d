"""A diffusion policy sampled from zero noise, the centre of its noise distribution, instead of a random draw: the
control for noise-space steering (realloop-finetune algo=noise), which chooses that noise by learning.

Runs realloop-eval's rollouts of the checkpoint with every chunk's initial noise set to zero (DDIM is then
deterministic) on the held-out seeds 100000 + k, and prints the success count; results also go to a JSON file.

    python benchmarks/diffusion_zero_noise.py outputs/distill/teacher --episodes 200 [--env realloop/ArmLift-v0]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from realloop.policies.checkpoint import load_policy
from realloop.policies.diffusion.policy import DiffusionPolicy
from realloop.policies.evaluate import env_kwargs_from_checkpoint, evaluate


class ZeroNoise(DiffusionPolicy):
    """The loaded policy, its chunks sampled from zero noise (the same module, another sampling call)."""

    def predict_action_chunk(
        self,
        obs: Mapping[str, torch.Tensor],
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch = next(iter(obs.values())).shape[0]
        zero = torch.zeros(batch, self.horizon, self.action_dim, device=self.device)
        return super().predict_action_chunk(obs, generator, noise=zero)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a realloop-train diffusion run or checkpoint")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument(
        "--env",
        default="auto",
        help="auto: the env of the checkpoint's data (its kwargs too); else a "
        "gymnasium id, made with its default kwargs",
    )
    p.add_argument("--out", type=Path, default=Path("outputs/bench/diffusion_zero_noise.json"))
    args = p.parse_args()
    loaded = load_policy(args.checkpoint)
    if type(loaded.policy) is not DiffusionPolicy:
        p.error(f"{args.checkpoint} holds a {type(loaded.policy).__name__}, not a diffusion policy")
    loaded.policy.__class__ = ZeroNoise  # same weights and buffers; only how it samples changes
    if args.env == "auto":
        env_id, kwargs = env_kwargs_from_checkpoint(loaded.meta, str(loaded.path / "policy.json"))
    else:
        env_id, kwargs = args.env, {}
    r = evaluate(loaded.policy, env_id, kwargs, episodes=args.episodes, num_envs=args.num_envs, seed=args.seed,
                 progress=False)  # fmt: skip
    result = {"checkpoint": str(loaded.path), "env": env_id, "env_kwargs": kwargs, "successes": r.successes,
              "episodes": r.episodes, "seeds": f"{args.seed}-{args.seed + args.episodes - 1}",
              "mean_return": r.mean_return}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{env_id}, zero noise: {r.successes}/{r.episodes} successful; results in {args.out}")


if __name__ == "__main__":
    main()
