"""A full disk while recording: a clear error, the episode in progress dropped, committed episodes intact.

The disk is a real 4 MiB tmpfs, mounted in a private mount namespace (``unshare``), so no root is needed
outside the namespace and nothing leaks into the host's mounts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = Path(__file__).with_name("full_disk_child.py")


def test_full_disk_keeps_committed_episodes(tmp_path: Path) -> None:
    assert shutil.which("unshare"), "util-linux `unshare` is needed to mount a small tmpfs for this test"
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    script = 'mount -t tmpfs -o size=4m tmpfs "$1" && exec "$2" "$3" "$1"'
    proc = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "_", str(mnt), sys.executable, str(CHILD)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["fs"] <= 4 * 2**20
    assert report["committed"] == [0, 1]
    assert report["error"] is not None and "disk is full" in report["error"]
    assert "committed episodes are intact" in report["error"]
    assert report["staging_left"] == []  # the partial episode was removed, freeing the space
    assert report["free_after_error"] > 2 * 2**20
    assert report["episodes_after_error"] == [0, 1]
    assert report["committed_identical"] is True
    assert report["next_episode"] == 2
    assert report["verify_ok"] is True
