"""Child for the full-disk test: runs on a tiny tmpfs (mounted by the test in a private mount namespace).

Records two small episodes, then one too large for the disk; prints a JSON report of what happened.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

from realloop.data import Dataset, DatasetWriteError

FEATURES = {
    "observation.images.cam": {"shape": [64, 64, 3], "image_format": "png"},
    "observation.state": {"dtype": "float32", "shape": [6]},
}


def content(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # noise does not compress: each PNG frame takes ~12 KB
    return np.arange(n) / 30, rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8), rng.normal(size=(n, 6))


def write(ds: Dataset, seed: int, n: int) -> int:
    ts, imgs, state = content(seed, n)
    with ds.begin_episode(seed=seed) as ep:
        for i in range(n):
            ep.add("observation.images.cam", ts[i], imgs[i])
            ep.add("observation.state", ts[i], state[i])
    return ep.index


def main() -> None:
    root = sys.argv[1]
    report: dict = {"fs": os.statvfs(root).f_blocks * os.statvfs(root).f_frsize}
    ds = Dataset.create(os.path.join(root, "d.zarr"), FEATURES)
    report["committed"] = [write(ds, 0, 40), write(ds, 1, 40)]
    try:
        write(ds, 2, 600)  # ~7 MB on a 4 MB disk
        report["error"] = None
    except DatasetWriteError as e:
        report["error"] = str(e)
    report["free_after_error"] = shutil.disk_usage(root).free
    report["staging_left"] = os.listdir(os.path.join(root, "d.zarr", ".staging"))
    reader = Dataset.open(os.path.join(root, "d.zarr"))
    report["episodes_after_error"] = reader.episode_indices
    same = True
    for index, seed in ((0, 0), (1, 1)):
        ts, imgs, state = content(seed, 40)
        ep = reader.episode(index)
        same &= np.array_equal(ep.stream("observation.images.cam").read(), imgs)
        same &= np.array_equal(ep.stream("observation.state").read(), state.astype(np.float32))
        same &= np.array_equal(ep.stream("observation.state").timestamps, ts)
    report["committed_identical"] = bool(same)
    report["next_episode"] = write(ds, 3, 20)  # the writer is usable again once space is back
    from realloop.data.verify import verify

    report["verify_ok"] = verify(os.path.join(root, "d.zarr")).ok
    print(json.dumps(report))


if __name__ == "__main__":
    main()
