"""``realloop-dataset``: inspect, check, curate and look at episode datasets.

::

    realloop-dataset info PATH [--json]
    realloop-dataset verify PATH [--episodes N ...] [--json-out FILE]
    realloop-dataset stats PATH [--features NAME ...] [--max-rows N] [--image-frames N] [--no-store]
    realloop-dataset convert --from {diffusion-policy,rosbag2,lerobot} SRC ... DST [options]
    realloop-dataset export-video PATH --episode N --camera NAME OUT.mp4 [--fps F]
    realloop-dataset plot PATH --episode N OUT.png [--keys NAME ...]
    realloop-dataset filter SRC DST [--success | --failure] [--where KEY=VALUE ...] [--episodes 0,3-5] [--no-stats]
    realloop-dataset merge DST SRC [SRC ...] [--no-stats]
    realloop-dataset split SRC --fractions 0.9,0.1 --out A B [--seed S] [--no-stats]
    realloop-dataset delete PATH --episodes 0,3-5 [--purge]      (``delete PATH --purge`` empties the trash)
    realloop-dataset restore PATH (--episodes 0,3-5 | --all)

filter, merge and split write new datasets (renumbered copies, statistics computed) that appear whole or not at
all; delete moves episodes to the dataset's trash, restore brings them back (see :mod:`realloop.data.curate`).

Exit status: 0 success, 1 damaged data, 2 a usage problem (not a dataset, no such episode or camera, bad
arguments), 130 interrupted. Expected errors print one line on stderr naming the problem and the fix;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from realloop.data.curate import CurateError, index_ranges, parse_episode_spec
from realloop.data.dataset import Dataset, DatasetLockedError, NotADatasetError, check_is_dataset
from realloop.data.layout import EPISODES_DIR, TRASH_DIR, episode_dirname, list_episode_indices

PROG = "realloop-dataset"
COMMANDS = (
    "info",
    "verify",
    "stats",
    "convert",
    "export-video",
    "plot",
    "filter",
    "merge",
    "split",
    "delete",
    "restore",
)
EXIT_OK, EXIT_DAMAGED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """An expected failure: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- helpers -------------------------------------------------------------------------------------------------
def _progress(args: argparse.Namespace) -> bool:
    flag = getattr(args, "progress", None)
    return sys.stderr.isatty() if flag is None else bool(flag)


def _sibling_json(path: Path, suffix: str) -> Path:
    p = path.resolve()
    return p.parent / f"{p.name}.{suffix}.json"


def _write_json(data: Any, out: Path, explicit: bool) -> Path | None:
    """Write ``data`` to ``out``; a failure is an error when the user named the file, else a warning."""
    try:
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
        os.replace(tmp, out)
        return out
    except OSError as e:
        if explicit:
            raise CliError(f"cannot write {out} ({e.strerror or e}); choose another --json-out") from e
        print(f"{PROG}: warning: could not save the result to {out} ({e.strerror or e})", file=sys.stderr)
        return None


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "checksum" in text.lower():
        return "checksum mismatch: a chunk file is truncated or corrupted"
    return f"{type(e).__name__}: {text}"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _check_exists(path: str | os.PathLike[str]) -> None:
    if not Path(path).exists():
        raise CliError(f"{path} does not exist; check the path (a dataset is a directory with zarr.json at its root)")


def _open(path: str, mode: str = "r") -> Dataset:
    _check_exists(path)
    try:
        return Dataset.open(path, mode=mode)
    except DatasetLockedError as e:
        raise CliError(str(e)) from None


# -- info ----------------------------------------------------------------------------------------------------
def _damaged(problem: str, path: str | os.PathLike[str]) -> CliError:
    """The error for data that looks damaged: say so and point to ``verify``."""
    return CliError(f"{problem}; the data may be damaged: run `{PROG} verify {path}`", EXIT_DAMAGED)


def dataset_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summary of a dataset from its metadata only (no chunk is read): what ``info`` prints."""
    ds = _open(str(path))
    try:
        root = Path(path)
        indices = ds.episode_indices
        streams: dict[str, dict[str, Any]] = {}
        for name, f in ds.features.items():
            streams[name] = {
                "dtype": f.dtype,
                "shape": list(f.shape),
                "kind": "image" if f.is_image else "numeric",
                "names": list(f.names) if f.names else None,
                "units": f.units,
                "nominal_rate_hz": f.rate_hz,
                "image_format": f.image_format,
                "samples": 0,
                "episodes": 0,
                "rate_hz": None,
                "_span": 0.0,
                "_intervals": 0,
            }
        success = {"true": 0, "false": 0, "unknown": 0}
        tasks: dict[str, int] = {}
        sources: dict[str, int] = {}
        duration = 0.0
        steps = 0
        step_stream = "action" if "action" in ds.features else next(iter(ds.features))
        for i in indices:
            meta_path = root / EPISODES_DIR / episode_dirname(i) / "zarr.json"
            try:
                attrs = ds.episode(i).meta
                ep_streams = attrs["streams"]
                duration += float(attrs["end_time"]) - float(attrs["start_time"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise _damaged(f"episode {i}'s metadata ({meta_path}) is unreadable ({e})", path) from None
            s = attrs.get("success")
            success["unknown" if s is None else "true" if s else "false"] += 1
            task = str(attrs.get("task") or "")
            tasks[task] = tasks.get(task, 0) + 1
            src = str(attrs.get("source") or "")
            sources[src] = sources.get(src, 0) + 1
            for name, summary in ep_streams.items():
                if name not in streams:
                    continue
                st = streams[name]
                n = int(summary.get("count") or 0)
                st["samples"] += n
                st["episodes"] += 1
                if n > 1 and summary.get("first") is not None and summary.get("last") is not None:
                    st["_span"] += float(summary["last"]) - float(summary["first"])
                    st["_intervals"] += n - 1
            ref = step_stream if step_stream in ep_streams else next(iter(ep_streams), None)
            steps += int(ep_streams[ref].get("count") or 0) if ref else 0
        for st in streams.values():
            span, intervals = st.pop("_span"), st.pop("_intervals")
            st["rate_hz"] = intervals / span if span > 0 else None
        size, files, trash_size = 0, 0, 0
        for dirpath, _dirs, names in os.walk(root):
            for fname in names:
                try:
                    n_bytes = os.stat(os.path.join(dirpath, fname)).st_size
                except OSError:
                    continue
                size += n_bytes
                files += 1
                if Path(dirpath).relative_to(root).parts[:1] == (TRASH_DIR,):
                    trash_size += n_bytes
        trashed = ds.trashed_indices
        return {
            "path": str(root),
            "format": ds.info.get("format"),
            "version": ds.info.get("version"),
            "robot": (ds.robot or {}).get("name") if isinstance(ds.robot, dict) else ds.robot,
            "episodes": len(indices),
            "episode_indices": [indices[0], indices[-1]] if indices else None,
            "episode_ranges": index_ranges(indices),
            "trash": {"episodes": trashed, "size_bytes": trash_size},
            "steps": steps,
            "steps_stream": step_stream,
            "duration_s": duration,
            "success": success,
            "tasks": tasks,
            "sources": sources,
            "size_bytes": size,
            "files": files,
            "stats": sorted(ds.stats) if ds.stats else None,
            "stats_stale": ds.stale_stats(),
            "streams": streams,
        }
    finally:
        ds.close()


def _cmd_info(args: argparse.Namespace) -> int:
    info = dataset_info(args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=_json_default))
        return EXIT_OK
    n = info["episodes"]
    first_last = f" (indices {info['episode_ranges']})" if n else ""
    tasks = ", ".join(f"{t or '(none)'} ({k})" for t, k in sorted(info["tasks"].items(), key=lambda x: -x[1]))
    sources = ", ".join(f"{t} ({k})" for t, k in sorted(info["sources"].items(), key=lambda x: -x[1]))
    s = info["success"]
    lines = [
        f"dataset   {info['path']}  ({info['format']} v{info['version']})",
        f"robot     {info['robot'] or '-'}",
        f"episodes  {n}{first_last}; success {s['true']}, failure {s['false']}, unknown {s['unknown']}",
        f"tasks     {tasks or '-'}",
        f"sources   {sources or '-'}",
        f"steps     {info['steps']} ({info['steps_stream']} samples)",
        f"duration  {_human_seconds(info['duration_s'])}"
        + (f" (mean {info['duration_s'] / n:.1f} s per episode)" if n else ""),
        f"size      {_human_bytes(info['size_bytes'])} in {info['files']} files",
        "stats     " + (", ".join(info["stats"]) if info["stats"] else f"none (compute with `{PROG} stats PATH`)"),
    ]
    if info["stats_stale"]:
        stale = info["stats_stale"]
        which = "all" if len(stale) == len(info["stats"]) else ", ".join(stale)
        lines.append(f"          stale for {which}: the episodes changed since; run `{PROG} stats {info['path']}`")
    trash = info["trash"]
    if trash["episodes"]:
        lines.append(
            f"trash     {len(trash['episodes'])} deleted episodes ({index_ranges(trash['episodes'])}), "
            f"{_human_bytes(trash['size_bytes'])}; `{PROG} restore` brings them back, `{PROG} delete --purge` "
            "frees the space"
        )
    lines.append("")
    header = f"{'stream':<32} {'dtype':<8} {'shape':<14} {'rate Hz':>9} {'samples':>10} {'episodes':>9}"
    lines.append(header)
    for name, st in info["streams"].items():
        rate = f"{st['rate_hz']:.1f}" if st["rate_hz"] else "-"
        shape = "(" + ", ".join(map(str, st["shape"])) + ("," if len(st["shape"]) == 1 else "") + ")"
        lines.append(f"{name:<32} {st['dtype']:<8} {shape:<14} {rate:>9} {st['samples']:>10} {st['episodes']:>9}")
    print("\n".join(lines))
    print(
        f"\n{n} episodes, {info['steps']} steps, {_human_seconds(info['duration_s'])}, "
        f"{len(info['streams'])} streams, {_human_bytes(info['size_bytes'])}"
    )
    return EXIT_OK


# -- verify --------------------------------------------------------------------------------------------------
def _cmd_verify(args: argparse.Namespace) -> int:
    from realloop.data.verify import verify

    _check_exists(args.path)
    if args.episodes:
        _check_episodes_exist(args.path, args.episodes)
    report = verify(args.path, progress=_progress(args), episodes=args.episodes)
    if not report.is_dataset:
        raise CliError(report.errors[0].message)
    shown = report.problems if args.verbose else [p for p in report.problems if p.severity != "info"]
    for p in shown:
        print(p)
    hidden = len(report.problems) - len(shown)
    if hidden:
        print(
            f"({hidden} note{'s' if hidden > 1 else ''} hidden: leftovers of an interrupted writer and the "
            "like; -v shows them)"
        )
    out = Path(args.json_out) if args.json_out else _sibling_json(Path(args.path), "verify")
    saved = _write_json(report.to_dict(), out, explicit=bool(args.json_out))
    print(report.summary() + (f"; report in {saved}" if saved else ""))
    if not report.ok:
        eps = report.damaged_episodes
        fix = (
            f"restore the listed files from a backup, or delete the damaged episode folder(s) "
            f"{', '.join(episode_dirname(i) for i in eps)} (the other episodes are intact)"
            if eps
            else "restore the listed files from a backup"
        )
        print(f"{PROG}: error: {args.path} is damaged ({len(report.errors)} problems); {fix}", file=sys.stderr)
        return EXIT_DAMAGED
    return EXIT_OK


def _check_episodes_exist(path: str, episodes: Sequence[int]) -> None:
    """A usage error (not damage) for ``--episodes`` naming episodes the dataset does not have; a path that is
    not a dataset is left to :func:`verify` to report."""
    try:
        check_is_dataset(Path(path))
    except NotADatasetError:
        return
    indices = list_episode_indices(Path(path))
    missing = sorted(set(episodes) - set(indices))
    if missing:
        which = f"episode{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}"
        raise CliError(
            f"--episodes: no {which} in {path}, which has episodes {_index_ranges(indices)}; "
            "pass episode numbers from that range"
        )


def _index_ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0..2, 5 (4 in all)``; ``none`` for no episodes."""
    return f"{index_ranges(indices)} ({len(indices)} in all)" if indices else "none (it is empty)"


# -- stats ---------------------------------------------------------------------------------------------------
def _fmt_values(v: Any, limit: int = 6) -> str:
    a = np.asarray(v, dtype=np.float64).ravel()
    text = " ".join(f"{x:.4g}" for x in a[:limit])
    return text + (f" ... ({a.size} values)" if a.size > limit else "")


def _cmd_stats(args: argparse.Namespace) -> int:
    try:
        from realloop.data.stats import compute_stats
    except ImportError as e:
        raise CliError(f"statistics are not available in this installation ({e}); reinstall realloop") from e

    ds = _open(args.path, mode="r" if args.no_store else "a")
    try:
        unknown = [f for f in args.features or [] if f not in ds.features]
        if unknown:
            raise CliError(f"no feature(s) {', '.join(unknown)} in {args.path}; it has {', '.join(ds.features)}")
        if not ds.episode_indices:
            raise CliError(f"{args.path} has no committed episodes; record some before computing statistics")
        t0 = time.perf_counter()
        try:
            stats = compute_stats(
                ds,
                features=args.features,
                max_rows=args.max_rows,
                image_frames_per_episode=args.image_frames,
                seed=args.seed,
                progress=_progress(args),
            )
        except (KeyError, ValueError, RuntimeError, OSError) as e:
            raise _damaged(f"computing statistics failed ({_reason(e)})", args.path) from e
        if not args.no_store:
            try:  # a --features subset updates those features and keeps the others (stale ones stay stale)
                if args.features:
                    ds.set_stats({**(ds.stats or {}), **stats}, fresh=stats)
                else:
                    ds.set_stats(stats)
            except OSError as e:
                raise CliError(
                    f"cannot store statistics in {args.path} ({e.strerror or e}); use --no-store and --json-out"
                ) from e
        seconds = time.perf_counter() - t0
    finally:
        ds.close()

    width = max((len(n) for n in stats), default=10)
    for name, s in stats.items():
        print(f"{name:<{width}}  count {s['count']}")
        for key in ("mean", "std", "min", "max", "q01", "q99"):
            print(f"{'':<{width}}  {key:<5} {_fmt_values(s[key])}")
    out = Path(args.json_out) if args.json_out else _sibling_json(Path(args.path), "stats")
    result = {
        "dataset": str(Path(args.path).resolve()),
        "stored": not args.no_store,
        "params": {
            "features": args.features,
            "max_rows": args.max_rows,
            "image_frames_per_episode": args.image_frames,
            "seed": args.seed,
        },
        "stats": stats,
    }
    saved = _write_json(result, out, explicit=bool(args.json_out))
    where = f"stored in {args.path}" if not args.no_store else "not stored (--no-store)"
    if not args.no_store and ds.stale_stats():
        print(
            f"note: the stored statistics of {', '.join(ds.stale_stats())} are still stale; run `{PROG} stats "
            f"{args.path}` without --features to recompute all"
        )
    print(
        f"statistics of {len(stats)} features over {len(ds.episode_indices)} episodes in {seconds:.1f} s, "
        f"{where}" + (f"; JSON in {saved}" if saved else "")
    )
    return EXIT_OK


# -- convert -------------------------------------------------------------------------------------------------
def _add_convert(sub: argparse.ArgumentParser, load: bool) -> None:
    """Give ``convert`` its options from realloop.data.convert, imported only when convert is run."""
    if load:
        try:
            from realloop.data.convert import add_convert_arguments
        except ImportError as e:
            sub.set_defaults(func=_convert_unavailable, reason=str(e))
            sub.add_argument("rest", nargs=argparse.REMAINDER)
            return
        add_convert_arguments(sub)
    sub.set_defaults(func=_cmd_convert)


def _convert_unavailable(args: argparse.Namespace) -> int:
    raise CliError(f"convert is not available in this installation ({args.reason}); reinstall realloop")


def _cmd_convert(args: argparse.Namespace) -> int:
    from realloop.data.convert import run_convert

    return int(run_convert(args))


# -- export-video / plot -------------------------------------------------------------------------------------
def _cmd_export_video(args: argparse.Namespace) -> int:
    from realloop.data.export import export_video

    v = export_video(args.path, args.episode, args.camera, args.out, fps=args.fps, progress=_progress(args))
    print(f"wrote {v.path}: {v.frames} frames, {v.width}x{v.height}, {v.fps:.2f} fps, {v.duration:.1f} s")
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace) -> int:
    from realloop.data.export import plot_episode

    p = plot_episode(args.path, args.episode, args.out, keys=args.keys, dpi=args.dpi)
    print(
        f"wrote {p.path}: {len(p.streams)} streams ({', '.join(p.streams)}) over {p.duration:.2f} s, "
        f"{p.width}x{p.height} px"
    )
    return EXIT_OK


# -- filter / merge / split / delete / restore ---------------------------------------------------------------
def _episode_spec(indices: Sequence[int]) -> str:
    """``[2, 5, 6]`` -> ``2,5-6``: what ``--episodes`` takes."""
    return index_ranges(indices).replace("..", "-").replace(", ", ",")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _run_curate(what: str, fix: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a realloop.data.curate operation; its refusals are usage errors, a failed write is exit 1."""
    try:
        return fn(*args, **kwargs)
    except CurateError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{what} failed ({e.strerror or e}); {fix}", EXIT_DAMAGED) from e


def _new_dataset_fix(paths: Sequence[str]) -> str:
    return f"nothing was written to {', '.join(paths)} and the sources are untouched; fix the cause and run it again"


def _stats_note(new: Any) -> str:
    if new.stats:
        return f"statistics of {len(new.stats)} features computed"
    return f"no statistics (--no-stats): compute them with `{PROG} stats {new.path}`"


def _warn(warnings: Sequence[str]) -> None:
    for w in warnings:
        print(f"{PROG}: warning: {w}", file=sys.stderr)


def _cmd_filter(args: argparse.Namespace) -> int:
    from realloop.data.curate import filter_dataset

    _check_exists(args.src)
    where = list(args.where or [])
    new = _run_curate(
        f"writing {args.dst}",
        _new_dataset_fix([args.dst]),
        filter_dataset,
        args.src,
        args.dst,
        where=where,
        episodes=args.episodes,
        stats=not args.no_stats,
    )
    _warn(new.warnings)
    n, total = len(new.episodes), len(list_episode_indices(Path(args.src)))
    kept = [i for _, i in new.episodes]
    print(
        f"wrote {args.dst}: {n} of {_plural(total, 'episode')} of {args.src}"
        + (f" ({', '.join(where)})" if where else "")
        + f", renumbered 0..{n - 1} (from {index_ranges(kept)}); {_stats_note(new)}"
    )
    return EXIT_OK


def _cmd_merge(args: argparse.Namespace) -> int:
    from realloop.data.curate import merge_datasets

    for src in args.sources:
        _check_exists(src)
    new = _run_curate(
        f"writing {args.dst}",
        _new_dataset_fix([args.dst]),
        merge_datasets,
        args.dst,
        args.sources,
        stats=not args.no_stats,
    )
    _warn(new.warnings)
    per_source = [sum(1 for p, _ in new.episodes if p == Path(src)) for src in args.sources]
    counts = ", ".join(f"{src}: {k}" for src, k in zip(args.sources, per_source, strict=True))
    n = len(new.episodes)
    print(
        f"wrote {args.dst}: {_plural(n, 'episode')} from {_plural(len(args.sources), 'dataset')} ({counts}), "
        f"renumbered 0..{n - 1}; {_stats_note(new)}"
    )
    return EXIT_OK


def _cmd_split(args: argparse.Namespace) -> int:
    from realloop.data.curate import split_dataset

    _check_exists(args.src)
    parts = _run_curate(
        f"writing {', '.join(args.out)}",
        _new_dataset_fix(args.out),
        split_dataset,
        args.src,
        args.out,
        args.fractions,
        seed=args.seed,
        stats=not args.no_stats,
    )
    _warn(parts[0].warnings if parts else [])
    total = sum(len(p.episodes) for p in parts)
    for part, frac in zip(parts, args.fractions, strict=True):
        picked = [i for _, i in part.episodes]
        print(
            f"wrote {part.path}: {_plural(len(picked), 'episode')} ({frac:g}), episodes {index_ranges(picked)} of "
            f"{args.src}; {_stats_note(part)}"
        )
    print(f"split {args.src} ({_plural(total, 'episode')}, seed {args.seed}) into {len(parts)} disjoint datasets")
    return EXIT_OK


def _trash_summary(r: Any) -> str:
    return f"{_plural(r.episodes, 'episode')} remain, {r.trashed} in the trash"


def _stale_note(r: Any) -> None:
    if r.stale_stats:
        print(f"the stored statistics are stale now; recompute them with `{PROG} stats {r.path}`")


def _cmd_delete(args: argparse.Namespace) -> int:
    from realloop.data.curate import delete_episodes

    _check_exists(args.path)
    fix = f"each episode is whole in episodes/ or {TRASH_DIR}/; fix the cause and run the command again"
    r = _run_curate(f"deleting from {args.path}", fix, delete_episodes, args.path, args.episodes, purge=args.purge)
    done = f"{_plural(len(r.done), 'episode')} ({index_ranges(r.done)})" if r.done else "no episode"
    if args.purge:
        print(f"deleted {done} of {args.path} for good; {_trash_summary(r)}")
    else:
        back = f" (`{PROG} restore {args.path} --episodes {_episode_spec(r.done)}` brings them back)" if r.done else ""
        print(f"moved {done} of {args.path} to its trash{back}; {_trash_summary(r)}")
    if r.skipped:
        print(f"already in the trash: {index_ranges(r.skipped)}")
    _stale_note(r)
    return EXIT_OK


def _cmd_restore(args: argparse.Namespace) -> int:
    from realloop.data.curate import restore_episodes

    _check_exists(args.path)
    fix = f"each episode is whole in episodes/ or {TRASH_DIR}/; fix the cause and run the command again"
    episodes = None if args.all else args.episodes
    r = _run_curate(f"restoring in {args.path}", fix, restore_episodes, args.path, episodes)
    done = f"{_plural(len(r.done), 'episode')} ({index_ranges(r.done)})" if r.done else "no episode"
    print(f"restored {done} of {args.path}; {_plural(r.episodes, 'episode')}, {r.trashed} left in the trash")
    if r.skipped:
        print(f"not in the trash (already restored): {index_ranges(r.skipped)}")
    _stale_note(r)
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------------------
def build_parser(load_convert: bool = False) -> argparse.ArgumentParser:
    """The argument parser; ``load_convert`` imports the converters to add the options of ``convert``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, check, convert and look at realloop episode datasets.",
        epilog="exit status: 0 ok, 1 damaged data, 2 usage error (not a dataset, no such episode...), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    subs = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)

    def progress_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="show a progress bar (default: when stderr is a terminal)",
        )

    p = subs.add_parser("info", help="episodes, steps, duration, streams, size")
    p.add_argument("path", help="dataset directory")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_cmd_info)

    p = subs.add_parser("verify", help="check metadata, timestamps and that every chunk decodes")
    p.add_argument("path", help="dataset directory")
    p.add_argument("--episodes", type=_int_list, action="extend", metavar="N[,N...]", help="check only these episodes")
    p.add_argument("--json-out", metavar="FILE", help="where to save the report (default: PATH.verify.json)")
    p.add_argument("-v", "--verbose", action="store_true", help="also list notes (writer leftovers...)")
    progress_flag(p)
    p.set_defaults(func=_cmd_verify)

    p = subs.add_parser("stats", help="(re)compute and store normalisation statistics")
    p.add_argument("path", help="dataset directory")
    p.add_argument(
        "--features",
        type=_name_list,
        action="extend",
        metavar="NAME[,NAME...]",
        help="only these features (default: all)",
    )
    p.add_argument("--max-rows", type=int, default=1_000_000, help="rows sampled for quantiles per feature")
    p.add_argument("--image-frames", type=int, default=32, help="frames sampled per episode for image stats")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-store", action="store_true", help="print and save JSON, leave the dataset unchanged")
    p.add_argument("--json-out", metavar="FILE", help="where to save the statistics (default: PATH.stats.json)")
    progress_flag(p)
    p.set_defaults(func=_cmd_stats)

    p = subs.add_parser("convert", help="import diffusion_policy replay buffers or rosbag2 bags")
    _add_convert(p, load_convert)

    p = subs.add_parser("export-video", help="write one camera stream of an episode as an mp4")
    p.add_argument("path", help="dataset directory")
    p.add_argument("--episode", type=int, required=True, metavar="N")
    p.add_argument("--camera", required=True, metavar="NAME", help="e.g. front or observation.images.front")
    p.add_argument("out", metavar="OUT.mp4")
    p.add_argument("--fps", type=float, help="frames per second (default: the stream's measured rate)")
    progress_flag(p)
    p.set_defaults(func=_cmd_export_video)

    p = subs.add_parser("plot", help="plot the numeric streams of an episode against time")
    p.add_argument("path", help="dataset directory")
    p.add_argument("--episode", type=int, required=True, metavar="N")
    p.add_argument("out", metavar="OUT.png")
    p.add_argument(
        "--keys",
        type=_name_list,
        action="extend",
        metavar="NAME[,NAME...]",
        help="streams to plot (default: every numeric one)",
    )
    p.add_argument("--dpi", type=int, default=100)
    p.set_defaults(func=_cmd_plot)

    def episodes_option(p: argparse.ArgumentParser, help_text: str) -> None:
        p.add_argument("--episodes", type=_int_list, action="extend", metavar="N[,A-B...]", help=help_text)

    def no_stats_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-stats", action="store_true", help="do not compute the new statistics (`stats` can, later)")

    p = subs.add_parser("filter", help="copy the episodes that match into a new dataset")
    p.add_argument("src", help="dataset to read")
    p.add_argument("dst", help="new dataset to write (must not exist)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--success", dest="where", action="append_const", const="success=true", help="keep successful episodes"
    )
    which.add_argument(
        "--failure", dest="where", action="append_const", const="success=false", help="keep failed episodes"
    )
    p.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="keep episodes whose metadata KEY (task, success, source, robot, attributes.NAME...) is VALUE; "
        "KEY!=VALUE excludes; repeat to require all",
    )
    episodes_option(p, "only among these episodes, e.g. 0,3-5")
    no_stats_flag(p)
    p.set_defaults(func=_cmd_filter)

    p = subs.add_parser("merge", help="join datasets with the same features into a new dataset")
    p.add_argument("dst", help="new dataset to write (must not exist)")
    p.add_argument("sources", nargs="+", metavar="SRC", help="datasets to join, in order")
    no_stats_flag(p)
    p.set_defaults(func=_cmd_merge)

    p = subs.add_parser("split", help="split episodes at random into disjoint new datasets")
    p.add_argument("src", help="dataset to read")
    p.add_argument(
        "--fractions", type=_float_list, required=True, metavar="F,F[,...]", help="share of each part, sum 1"
    )
    p.add_argument("--out", nargs="+", required=True, metavar="PATH", help="one new dataset per fraction")
    p.add_argument("--seed", type=int, default=0, help="seed of the random assignment")
    no_stats_flag(p)
    p.set_defaults(func=_cmd_split)

    p = subs.add_parser("delete", help="move episodes to the dataset's trash (or --purge them)")
    p.add_argument("path", help="dataset directory")
    episodes_option(p, "episodes to delete, e.g. 0,3-5")
    p.add_argument("--purge", action="store_true", help="delete for good (without --episodes: empty the trash)")
    p.set_defaults(func=_cmd_delete)

    p = subs.add_parser("restore", help="bring deleted episodes back from the trash")
    p.add_argument("path", help="dataset directory")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--episodes", type=_int_list, action="extend", metavar="N[,A-B...]", help="episodes to restore")
    which.add_argument("--all", action="store_true", help="restore the whole trash")
    p.set_defaults(func=_cmd_restore)
    return parser


def _name_list(text: str) -> list[str]:
    """``a,b`` or a repeated option: a list that never swallows the positional arguments after it."""
    return [t for t in (x.strip() for x in text.split(",")) if t]


def _int_list(text: str) -> list[int]:
    try:
        return parse_episode_spec(text)
    except CurateError:
        raise argparse.ArgumentTypeError(
            f"expected episode numbers like 0,3,7 or ranges like 3-5, got {text!r}"
        ) from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in _name_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.9,0.1, got {text!r}") from None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("realloop")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def _selected_command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``realloop-dataset``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(load_convert=_selected_command(argv) == "convert")
    args = parser.parse_args(argv)
    from realloop.data.export import DamagedDataError, ExportError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `realloop-dataset info ... | head`
        return EXIT_OK
    except Exception as e:
        if args.debug:
            raise
        if isinstance(e, CliError):
            code = e.code
        elif isinstance(e, DamagedDataError):
            code = EXIT_DAMAGED
        elif isinstance(e, (NotADatasetError, ExportError, DatasetLockedError)):
            code = EXIT_USAGE
        else:
            raise
        message = " ".join(str(e).split())
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
