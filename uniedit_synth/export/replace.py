"""Replacing an earlier export in `--out` (`--overwrite`): only a folder a uniedit export wrote, and in it only the
files that export's own manifest lists.

`export.json` is the manifest: its `written` list names every file the export wrote (relative paths, each inside
the folder). A folder whose export.json is not JSON, is another tool's, or does not list its files is refused
with nothing touched. Files that are not listed (the user's own, added later) stay where they are; a new file
that would land on one of them is refused before anything is removed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import ExportError

MANIFEST = "export.json"
#: an export.json larger than this is not one of ours (ours lists file names: kilobytes to a few MB)
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class _Manifest(BaseModel):
    """The parts of an earlier export.json that decide what may be removed (ExportSummary writes them)."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: str
    run_dir: str
    out_dir: str
    rows: dict[str, int]
    files: list[str]
    written: list[str] | None = Field(default=None)


def _refuse(out: Path, why: str) -> ExportError:
    return ExportError(f"{out} is not empty and is not a uniedit export ({why}); refusing to replace it: "
                       "choose another --out, or empty it yourself")


def _listed(out: Path, relative: Any) -> str:
    """A listed path, checked: a relative path that stays inside `out` (even through symlinks)."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise ValueError(f"{relative!r} is not a file name")
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts or relative != PurePosixPath(relative).as_posix():
        raise ValueError(f"{relative!r} leaves the folder")
    if not (out / relative).resolve().is_relative_to(out.resolve()):
        raise ValueError(f"{relative!r} resolves outside the folder")
    return relative


def previous_export(out: Path, formats: tuple[str, ...]) -> list[str]:
    """The files an earlier export in `out` wrote (checked), or ExportError when `out` is not such a folder."""
    path = out / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise _refuse(out, f"no {MANIFEST}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise _refuse(out, f"its {MANIFEST} is far too large to be one")
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise _refuse(out, f"its {MANIFEST} is not JSON") from None
    try:
        manifest = _Manifest.model_validate(value)
    except ValidationError:
        raise _refuse(out, f"its {MANIFEST} is not a uniedit export manifest") from None
    if manifest.format not in formats:
        raise _refuse(out, f"its {MANIFEST} names format {manifest.format[:40]!r}")
    if manifest.written is None:
        raise ExportError(f"{out}/{MANIFEST} does not list the files its export wrote (an export made before "
                          "uniedit listed them), so --overwrite cannot tell them from yours: empty the folder "
                          "yourself or choose another --out")
    try:
        return [_listed(out, relative) for relative in manifest.written]
    except ValueError as exc:
        raise _refuse(out, f"its {MANIFEST} lists {exc}") from None


def files_under(root: Path) -> list[str]:
    """Every file (and symlink) under `root`, relative, `/`-separated; symlinked folders are not entered."""
    found = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for name in files + [d for d in dirs if (base / d).is_symlink()]:
            found.append((base / name).relative_to(root).as_posix())
    return sorted(found)


def replace_export(staging: Path, out: Path, written: list[str] | None) -> None:
    """Move the finished export in `staging` to `out`. `written`: the files of the earlier export there (from
    `previous_export`), or None when `out` is new or empty. Only those files are removed; the rest stay."""
    if written is None or not out.exists():
        staging.rename(out)
        return
    ours = set(written) | {MANIFEST}
    present = files_under(out)
    theirs = [p for p in present if p not in ours]
    if not theirs:  # nothing but the earlier export: swap the folders (never a half-replaced export)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return
    new = files_under(staging)
    clashes = sorted(set(new) & set(theirs))
    blocked = sorted(p for p in new for t in theirs if p.startswith(f"{t}/"))  # a file of theirs where a folder goes
    if clashes or blocked:
        names = ", ".join((clashes + blocked)[:3]) + (" ..." if len(clashes + blocked) > 3 else "")
        raise ExportError(f"{out} holds file(s) the earlier export did not write where this export writes: "
                          f"{names}; move them or choose another --out (nothing was changed)")
    emptied: set[Path] = set()
    for relative in present:
        if relative in ours and relative != MANIFEST:  # the manifest goes last, replaced by the new one
            target = out / relative
            target.unlink(missing_ok=True)
            emptied.update(p for p in target.parents if p != out and p.is_relative_to(out))
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
    try:
        for relative in sorted(new, key=lambda p: p == MANIFEST):
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, target)
    except OSError as exc:
        raise ExportError(f"cannot move the export into {out}: {exc.strerror or exc}") from None
    shutil.rmtree(staging, ignore_errors=True)
