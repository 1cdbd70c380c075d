"""Child process for the curate crash tests: runs one operation and dies (``os._exit``, no clean-up runs) the
``N``-th time the operation reaches ``POINT`` (see ``realloop.data.curate._test_hook``).

Run as ``python curate_crash_child.py POINT N OP ARGS...`` with OP one of ``filter SRC DST``,
``merge DST SRC...``, ``split SRC A B`` or ``delete PATH 0,3-5``. Prints ``finished`` if the point was never
reached that often.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from realloop.data import curate

    point, n, op, *args = sys.argv[1:]
    seen = 0

    def die_at(p: str) -> None:
        nonlocal seen
        if p == point:
            seen += 1
            if seen == int(n):
                os._exit(9)

    curate._test_hook = die_at
    if op == "filter":
        curate.filter_dataset(args[0], args[1], where=["success=true"])
    elif op == "merge":
        curate.merge_datasets(args[0], args[1:])
    elif op == "split":
        curate.split_dataset(args[0], args[1:], [0.5, 0.5], seed=0)
    elif op == "delete":
        curate.delete_episodes(args[0], curate.parse_episode_spec(args[1]))
    else:
        raise SystemExit(f"unknown operation {op}")
    print("finished", flush=True)


if __name__ == "__main__":
    main()
