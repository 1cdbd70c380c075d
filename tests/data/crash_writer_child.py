"""Child process for the crash-safety test: records deterministic episodes forever, until it is killed.

Run as ``python crash_writer_child.py DATASET FIRST_SEED``. Prints ``ready`` once the dataset is open and
``committed <index> <seed>`` after each commit returns. ``episode_content(seed)`` regenerates what an episode
with that seed holds, so the parent can check every committed episode bit for bit.
"""

from __future__ import annotations

import sys

import numpy as np

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [4]},
    "observation.images.cam": {"shape": [16, 16, 3], "image_format": "png"},
    "action": {"dtype": "float64", "shape": [2]},
}


def episode_content(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    n_state, n_img, n_act = (int(x) for x in rng.integers([1, 0, 1], [1500, 260, 60]))
    return {
        "observation.state": (np.arange(n_state) / 500.0, rng.normal(size=(n_state, 4)).astype(np.float32)),
        "observation.images.cam": (
            np.arange(n_img) / 30.0 + 0.001,
            rng.integers(0, 255, size=(n_img, 16, 16, 3), dtype=np.uint8),
        ),
        "action": (np.arange(n_act) / 10.0, rng.normal(size=(n_act, 2))),
    }


def main() -> None:
    from realloop.data import Dataset

    path, seed = sys.argv[1], int(sys.argv[2])
    ds = Dataset.create(path, FEATURES, exist_ok=True)
    print("ready", flush=True)
    while True:
        content = episode_content(seed)
        ep = ds.begin_episode(task="crash", source="scripted", seed=seed)
        for name, (ts, vals) in content.items():
            if len(ts) == 0:
                continue
            # write in pieces so that kills land between, and inside, chunk and shard writes
            for lo in range(0, len(ts), 37):
                ep.extend(name, ts[lo : lo + 37], vals[lo : lo + 37])
        index = ep.commit(success=bool(seed % 2))
        print(f"committed {index} {seed}", flush=True)
        seed += 1


if __name__ == "__main__":
    main()
