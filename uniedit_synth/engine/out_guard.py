"""What `uniedit synth --out` may touch: never a source file or an `--image-root`, and in a folder that is not a
run, nothing of the user's.

A run writes and deletes at fixed places under `--out` (RUN_PATHS: shard files, rejects, the cache, the manifest,
run.json, stats.json, the lock, batch job files). Before anything is created there:

* a source file (or a source folder) at one of those places, or an `--out` inside a source folder, is refused:
  the run would overwrite its own input, or read its own output back as input on a rerun;
* an `--image-root` that is `--out` or lies at one of those places is refused;
* a folder that exists, is not empty and is not a run (no valid run.json, no manifest) is refused unless
  `force`; with `force` the run is written beside the user's files, and one of theirs at a place the run writes
  (their stats.json, a data/ folder of their own) is still refused, since the run would overwrite it.

A folder holding only the empty folders (and lock) a run creates first is a run that stopped before its
run.json: it is resumed. Object-store locations (URIs) are not checked here: they have no source beside them.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import SourceSpec
from ..core.errors import OutputDirError
from ..run.store import RunDir
from ..sources.files import parquet_paths
from ..sources.hf import parse_hf_spec

#: what a run writes (and may delete) under its root, relative to it
RUN_PATHS = ("data", "rejects", "attempts", "cache", "screen", "batches", "audit", "manifest", "manifest.jsonl",
             "run.json", "stats.json", ".lock")
#: what a run creates before its run.json (a run killed at once leaves these, empty)
FIRST_PATHS = ("data", "rejects", "attempts", "cache", ".lock")


class OutOverlapsSource(OutputDirError):
    """`--out` would write where the source (or the image root) is."""


class NotARunFolder(OutputDirError):
    """`--out` is a non-empty folder that is not a uniedit run (and `--force` was not given)."""


def _within(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def source_paths(spec: SourceSpec) -> list[Path]:
    """The local files or folders a source reads (resolved); [] for the scene world and hub data sets."""
    text = (spec.spec or "").strip()
    if not text or text == "scenes":
        return []
    if text.startswith("hf:"):
        local = Path(parse_hf_spec(text)[0]).expanduser()
        return [local.resolve()] if local.exists() else []
    if any(ch in text for ch in "*?["):
        return [p.resolve() for p in parquet_paths(text)]
    path = Path(text).expanduser()
    return [path.resolve()] if path.exists() else []


def _run_paths(out: Path) -> list[Path]:
    return [out / rel for rel in RUN_PATHS]


def check_sources(out: Path, spec: SourceSpec) -> None:
    """Refuse an `--out` whose files would land on the source or the image root (or inside a source folder)."""
    owned = _run_paths(out)
    for source in source_paths(spec):
        inside = next((p for p in owned if _within(source, p)), None)
        if inside is not None or (source.is_dir() and _within(out, source)):
            where = f"{inside.relative_to(out)}/ is where the run writes" if inside is not None else \
                "the run would write inside the source folder"
            raise OutOverlapsSource(
                f"--out {out} overlaps the source {source} ({where}); choose an --out outside the source"
            )
    if spec.image_root:
        root = Path(spec.image_root).expanduser().resolve()
        if root == out or any(_within(root, p) for p in owned):
            raise OutOverlapsSource(
                f"--out {out} overlaps --image-root {root} (the run writes its shard, reject and cache files "
                "there); choose an --out outside the image root"
            )


def _holds_files(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir():
        return path.exists() or path.is_symlink()
    return any(p.is_file() or p.is_symlink() for p in path.rglob("*"))


def _is_run(run_dir: RunDir) -> bool:
    """A uniedit run: a run.json of ours (valid), or a manifest."""
    info, _ = run_dir.load_run_json()
    return info is not None or run_dir.fs.exists("manifest.jsonl") or bool(run_dir.fs.list("manifest", "*.json"))


def check_folder(out: Path, run_dir: RunDir, force: bool) -> None:
    """Refuse a non-empty folder that is not a run unless `force`; never one with a file where a run writes."""
    if not out.is_dir():
        return  # new (or a file: RunDir.create_dirs says it is not writable)
    if _is_run(run_dir):
        return
    entries = list(out.iterdir())
    # the response cache is content-addressed (a run only adds entries): a cache/ copied from another run seeds
    # this one with its paid replies, as a run that stopped before its run.json would
    leftovers = [e for e in entries if e.name in FIRST_PATHS and (e.name == ".lock" or not _holds_files(e))
                 or (e.name == "cache" and e.is_dir() and not e.is_symlink())]
    if len(leftovers) == len(entries):
        return  # empty, or a run that stopped before its run.json
    if not force:
        shown = ", ".join(sorted(e.name for e in entries if e not in leftovers)[:3])
        raise NotARunFolder(
            f"--out {out} is not empty and is not a uniedit run (it holds {shown}{' ...' if len(entries) > 3 else ''}"
            "); choose another --out, or pass --force to write the run beside those files (none of them is "
            "overwritten or removed)"
        )
    clashes = sorted(p.relative_to(out).as_posix() for p in _run_paths(out)
                     if p.name not in (".lock", "cache") and _holds_files(p))
    if clashes:
        raise NotARunFolder(
            f"--out {out} holds {', '.join(clashes[:4])}, where a run writes its own files; move them or choose "
            "another --out (--force never overwrites them)"
        )


def check_out(location: str | RunDir, spec: SourceSpec, force: bool = False) -> None:
    """Every check of this module for a local `--out`, before anything is created there."""
    run_dir = location if isinstance(location, RunDir) else RunDir(location)
    if run_dir.path is None:
        return
    out = run_dir.path.expanduser().resolve()
    check_sources(out, spec)
    check_folder(out, RunDir(out), force)
