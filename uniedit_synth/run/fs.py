"""Where a run directory lives: a local path, or any pyarrow filesystem URI (s3://, gs://, hdfs://, …).

The store, the response cache and the readers see a run root through one small surface, with paths relative
to the root and `/`-separated: read bytes (None when missing), write bytes atomically, list a folder, size,
mtime, delete, move, open a parquet file. Two implementations:

* `LocalRunFS`: plain paths and `file://` URIs, with the POSIX behaviour of a run dir (a write goes to a
  hidden temp name, is optionally fsynced and renamed into place).
* `ArrowRunFS`: a `pyarrow.fs.FileSystem.from_uri` filesystem. A write is one upload through
  `open_output_stream`, which an object store makes visible only once complete, so a reader never sees half
  an object; there are no renames or appends (store.py keeps one manifest object per shard instead).

Credentials are pyarrow's own business (environment variables, instance metadata, config files). A URI may
carry settings in its query (`?endpoint_override=host:port&scheme=http`) and, discouraged, keys in its
userinfo: `redact_location` removes both wherever a location is shown or recorded. Both classes pickle to
their location only (Ray ships them to workers), and the pyarrow filesystem is rebuilt there.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..core.errors import DiskFullError, OutputDirError
from ..core.redact import redact_url

DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")  # s3://, gs://, hdfs://, file:// (not C:/)


def is_uri(location: str | os.PathLike[str]) -> bool:
    return bool(URI_SCHEME.match(str(location)))


def normalize_location(location: str | os.PathLike[str]) -> str:
    """The location as a string; a URI that went through `Path` (`s3:/b/x`) gets its `//` back."""
    text = str(location)
    match = URI_SCHEME.match(text)
    if match and not text.startswith(f"{match.group(1)}://"):
        scheme = match.group(1)
        rest = text[len(scheme) + 1 :].lstrip("/")
        text = f"{scheme}:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
    return text


def redact_location(location: str | os.PathLike[str]) -> str:
    """A location safe to show or record: a URI loses its userinfo (keys) and its query (settings)."""
    text = normalize_location(location)
    return redact_url(text) if is_uri(text) else text


def disk_error(exc: OSError, what: str) -> OutputDirError:
    """Turn an OSError from writing into the right one-line user error."""
    if exc.errno in DISK_ERRNOS:
        return DiskFullError(
            f"cannot write {what}: {os.strerror(exc.errno)}. Free some space (or fix the filesystem) and "
            "run the same command again: finished shards are kept and the run resumes."
        )
    return OutputDirError(f"cannot write {what}: {exc.strerror or str(exc).splitlines()[0]}")


#: temp-name suffixes of this process: a counter, not uuid4 (an os.urandom call per write); O_EXCL below makes
#: a stale temp file of an earlier process with the same pid a retry, never a shared file
_TMP_SEQ = itertools.count()
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, fsync: bool = True, what: str | None = None) -> None:
    """Write to a hidden temp name next to `path` (fsynced if asked) and rename it into place.

    Plain os calls on a str path (no Path, no Python file object): the cache writes about three entries a
    record, and the file-object machinery was most of their CPU."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = ""
    try:
        for _ in range(100):
            tmp = os.path.join(folder, f".{name}.{os.getpid()}-{next(_TMP_SEQ)}.tmp")
            try:
                fd = os.open(tmp, _CREATE, 0o666)
            except FileNotFoundError:
                os.makedirs(folder or ".", exist_ok=True)
                fd = os.open(tmp, _CREATE, 0o666)
            except FileExistsError:  # left by a killed process that had this pid
                continue
            break
        else:
            raise FileExistsError(errno.EEXIST, "no free temp name", tmp)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise disk_error(exc, what or path) from None


def read_file_bytes(path: str) -> bytes | None:
    """A whole local file, None when it does not exist: os calls, no Path or file object (a cache miss is one
    failed open)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1) if size else b""
        if len(data) <= size:  # short read, or a file that grew: read to the end
            chunks = [data]
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


class RunFS:
    """A run root; every path argument is relative to it (`data/shard-00001.parquet`)."""

    remote: bool
    location: str  # as given (a URI keeps its query: workers rebuild the filesystem from it)

    @property
    def display(self) -> str:
        return redact_location(self.location)

    @property
    def local_root(self) -> Path | None:
        """The root as a local Path, or None for a remote filesystem."""
        return None

    def display_path(self, rel: str) -> str:
        return f"{self.display.rstrip('/')}/{rel}"

    def child(self, rel: str) -> RunFS:
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes | None:
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes, fsync: bool = False, what: str | None = None) -> None:
        raise NotImplementedError

    def list(self, rel_dir: str, pattern: str = "*") -> list[str]:
        """Names (not paths) of the files in `rel_dir` matching `pattern`, sorted; [] when it does not exist."""
        raise NotImplementedError

    def size(self, rel: str) -> int | None:
        raise NotImplementedError

    def mtime(self, rel: str) -> float | None:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        """Delete a file; a missing one is fine."""
        raise NotImplementedError

    def move(self, rel: str, new_rel: str) -> None:
        raise NotImplementedError

    def parquet_file(self, rel: str) -> pq.ParquetFile:
        raise NotImplementedError


class LocalRunFS(RunFS):
    remote = False

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.location = str(self.root)
        self._prefix = os.path.join(self.location, "")  # `root/`: the hot paths join strings, not Paths

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalRunFS, (self.root,))

    @property
    def local_root(self) -> Path:
        return self.root

    def display_path(self, rel: str) -> str:
        return str(self.root / rel)

    def child(self, rel: str) -> LocalRunFS:
        return LocalRunFS(self.root / rel)

    def read_bytes(self, rel: str) -> bytes | None:
        return read_file_bytes(self._prefix + rel)

    def write_bytes(self, rel: str, data: bytes, fsync: bool = False, what: str | None = None) -> None:
        atomic_write_bytes(self._prefix + rel, data, fsync=fsync, what=what)

    def list(self, rel_dir: str, pattern: str = "*") -> list[str]:
        return sorted(p.name for p in (self.root / rel_dir).glob(pattern) if p.is_file())

    def size(self, rel: str) -> int | None:
        try:
            return (self.root / rel).stat().st_size
        except OSError:
            return None

    def mtime(self, rel: str) -> float | None:
        try:
            return (self.root / rel).stat().st_mtime
        except OSError:
            return None

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def delete(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def move(self, rel: str, new_rel: str) -> None:
        target = self.root / new_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).rename(target)

    def parquet_file(self, rel: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.root / rel)


class ArrowRunFS(RunFS):
    """A run root on a pyarrow filesystem, built from `location` (a URI); `prefix` is a folder under it."""

    remote = True

    def __init__(self, location: str, prefix: str = "", filesystem: pafs.FileSystem | None = None):
        """`location` is a URI; or, with `filesystem` given (tests), the root's path inside that filesystem."""
        self.location = normalize_location(location)
        self.prefix = prefix.strip("/")
        if filesystem is None:
            try:
                filesystem, root = pafs.FileSystem.from_uri(self.location)
            except (ValueError, OSError) as exc:  # pyarrow: ArrowInvalid (a ValueError) or an OSError
                reason = str(exc).replace(self.location, redact_location(self.location)).splitlines()[0]
                raise OutputDirError(f"cannot open {redact_location(self.location)}: {reason}") from None
        else:
            root = self.location
        self.filesystem = _single_put(filesystem)
        base = root.rstrip("/")
        self.root = f"{base}/{self.prefix}" if self.prefix else base

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArrowRunFS, (self.location, self.prefix))

    @property
    def display(self) -> str:
        base = redact_location(self.location).rstrip("/")
        return f"{base}/{self.prefix}" if self.prefix else base

    def child(self, rel: str) -> ArrowRunFS:
        other = object.__new__(ArrowRunFS)  # shares the filesystem (and its connections): no copy.copy,
        other.__dict__.update(self.__dict__)  # which would rebuild it through __reduce__
        other.prefix = f"{self.prefix}/{rel.strip('/')}" if self.prefix else rel.strip("/")
        other.root = f"{self.root}/{rel.strip('/')}"
        return other

    def full(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    @contextlib.contextmanager
    def _reading(self, rel: str) -> Iterator[None]:
        """A failed read (network, permissions) is a one-line user error, not a traceback."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise OutputDirError(f"cannot read {self.display_path(rel)}: {str(exc).splitlines()[0]}") from None

    def _info(self, rel: str) -> pafs.FileInfo:
        with self._reading(rel):
            return self.filesystem.get_file_info(self.full(rel))

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            with self._reading(rel), self.filesystem.open_input_stream(self.full(rel)) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes, fsync: bool = False, what: str | None = None) -> None:
        path = self.full(rel)
        try:
            try:
                stream = self.filesystem.open_output_stream(path)
            except FileNotFoundError:  # filesystems with real folders (HDFS, mock); object stores have none
                self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
                stream = self.filesystem.open_output_stream(path)
            with stream:
                stream.write(data)
        except OSError as exc:
            raise disk_error(exc, what or self.display_path(rel)) from None

    def list(self, rel_dir: str, pattern: str = "*") -> list[str]:
        selector = pafs.FileSelector(self.full(rel_dir), allow_not_found=True, recursive=False)
        try:
            with self._reading(rel_dir):
                infos = self.filesystem.get_file_info(selector)
        except FileNotFoundError:
            return []
        return sorted(
            info.base_name
            for info in infos
            if info.type == pafs.FileType.File and fnmatch.fnmatchcase(info.base_name, pattern)
        )

    def size(self, rel: str) -> int | None:
        info = self._info(rel)
        return info.size if info.type == pafs.FileType.File else None

    def mtime(self, rel: str) -> float | None:
        info = self._info(rel)
        return info.mtime.timestamp() if info.type == pafs.FileType.File and info.mtime else None

    def exists(self, rel: str) -> bool:
        return self._info(rel).type != pafs.FileType.NotFound

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(self.full(rel))

    def move(self, rel: str, new_rel: str) -> None:
        target = self.full(new_rel)
        try:
            self.filesystem.move(self.full(rel), target)
        except FileNotFoundError:
            if not self.exists(rel):
                raise
            self.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
            self.filesystem.move(self.full(rel), target)

    def parquet_file(self, rel: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.full(rel), filesystem=self.filesystem)


def _single_put(filesystem: pafs.FileSystem) -> pafs.FileSystem:
    """S3 with delayed open: a small object is uploaded by one PutObject when its stream closes, instead of a
    three-request multipart upload (a third of the round trips for cache entries and manifest objects)."""
    if not isinstance(filesystem, pafs.S3FileSystem):
        return filesystem
    rebuild, (options,) = filesystem.__reduce__()
    if options.get("allow_delayed_open"):
        return filesystem
    return rebuild({**options, "allow_delayed_open": True})


def open_run_fs(location: str | os.PathLike[str]) -> RunFS:
    """The run root at `location`: a path or `file://` URI is local, any other URI goes through pyarrow."""
    text = normalize_location(location)
    if not is_uri(text):
        return LocalRunFS(location)
    if text.startswith("file://"):
        return LocalRunFS(urlsplit(text).path)
    return ArrowRunFS(text)


def as_run_fs(location: str | os.PathLike[str] | RunFS) -> RunFS:
    return location if isinstance(location, RunFS) else open_run_fs(location)
