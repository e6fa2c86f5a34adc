"""Atomic file and directory writes: an interrupted run never leaves a half-written output."""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench.errors import PrunebenchError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


#: Below this many free bytes, a failed write is taken for a full disk (torch.save says only
#: "unexpected pos"): the file system has no room for another block of any file.
FULL_DISK_BYTES = 1 << 20


def _existing_ancestor(path: Path) -> Path:
    return next(p for p in (path, *path.absolute().parents) if p.exists())


def _disk_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(_existing_ancestor(path)).free < FULL_DISK_BYTES
    except OSError:
        return False


#: The name of a staging file or directory (``.NAME.<random>.tmp``, made by ``mkstemp``/``mkdtemp``).
_STAGING = re.compile(r"^\.(.+)\.[A-Za-z0-9_]+\.tmp$")


def public_path(path: Path) -> Path:
    """``path`` with every staging component replaced by the output it becomes (what a user asked for)."""
    return Path(*[(m.group(1) if (m := _STAGING.match(part)) else part) for part in path.parts])


def write_problem(exc: BaseException, path: Path) -> str | None:
    """The one-line reason a write of ``path`` failed with ``exc``, when it is the disk's or the file
    system's (no space left, a quota, no permission, read-only); ``None`` for any other error."""
    shown = public_path(path)
    errno_ = exc.errno if isinstance(exc, OSError) else None
    if (
        errno_ in (errno.ENOSPC, errno.EDQUOT)
        or "No space left on device" in str(exc)
        or (isinstance(exc, OSError | RuntimeError) and _disk_full(path))
    ):
        return f"no space left on the device to write {shown}; nothing was written: free some space and run again"
    filename = getattr(exc, "filename", None)
    where = path.absolute().parent
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS) and (
        filename is None or Path(filename).absolute().is_relative_to(where)
    ):
        return f"cannot write {shown}: {exc.strerror or exc}"
    return None


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, a write that fails for lack of space or permission is one ``PrunebenchError``
    naming ``path`` (the library errors say neither); any other error passes unchanged. Folders the
    block created for ``path`` are removed again when it fails and leaves them empty."""
    path = Path(path)
    missing = [p for p in path.absolute().parents if not p.exists()]
    try:
        yield
    except PrunebenchError:
        _remove_empty(missing)
        raise
    except Exception as exc:
        _remove_empty(missing)
        problem = write_problem(exc, path)
        if problem is None:
            raise
        raise PrunebenchError(problem) from None


def _remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (innermost first) that exists and is empty."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path in the same directory that replaces ``path`` only if the block succeeds.

    A full disk or a refused write is a ``PrunebenchError`` naming ``path`` (:func:`writing`), and
    the temporary file is removed.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the result should be an ordinary file
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` atomically; gzip it reproducibly (mtime 0, no name) when ``path`` ends in .gz."""
    with atomic_file(path) as tmp:
        if Path(path).name.endswith(".gz"):
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                gz.write(text.encode("utf-8"))
        else:
            tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_text(path: str | os.PathLike) -> str:
    """Read UTF-8 text, transparently un-gzipping a ``.gz`` file."""
    path = Path(path)
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read().decode("utf-8")
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class OutputKind:
    """What an output of one kind always holds, so that a new output replaces only an old one of its kind.

    ``markers`` are the entries a directory of this kind always holds or, with ``directory=False``,
    the top-level keys its JSON file always has. ``partial`` lists the only entries an interrupted run
    may leave in the directory (recovery's resumable state, say).
    """

    name: str
    markers: tuple[str, ...]
    directory: bool = True
    partial: tuple[str, ...] = ()

    def holds(self, path: Path) -> bool:
        """Whether the existing ``path`` is an output of this kind (an empty directory counts)."""
        if self.directory:
            entries = {entry.name for entry in path.iterdir()}
            return set(self.markers) <= entries or entries <= set(self.partial)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(data, dict) and set(self.markers) <= set(data)

    def describe(self) -> str:
        what = "entries" if self.directory else "keys"
        return f"a {self.name} ({what} {', '.join(self.markers)})"


def _check_replaceable(path: Path) -> Path:
    """Refuse the working directory, one of its parents, a symbolic link, a path under a file, or a
    path whose directory cannot be created or written."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise PrunebenchError(
            f"refusing to replace {path}: it is the working directory or one of its parents"
        )
    if path.is_symlink():
        raise PrunebenchError(f"refusing to replace {path}: it is a symbolic link; name the target itself")
    parent = _existing_ancestor(resolved.parent)
    if not parent.is_dir():
        raise PrunebenchError(f"cannot write {path}: {parent} is not a directory")
    _check_writable(parent, path)
    return path


def _check_writable(directory: Path, path: Path) -> None:
    """Create and remove a directory in ``directory``, where the output's folders and temporary files
    go: the only test of permissions that root, read-only mounts and pseudo file systems all answer."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=directory, prefix=".prunebench-probe-"))
    except OSError as exc:
        raise PrunebenchError(
            f"cannot write {path}: nothing can be created in {directory} ({exc.strerror})"
        ) from None


def check_output(path: str | os.PathLike, kind: OutputKind) -> Path:
    """``path`` if an output of ``kind`` may be written there: it is absent, an empty directory, or an
    earlier output of the same kind (a rerun replaces it). Call it before any expensive work.

    Raises ``PrunebenchError`` for anything else at ``path`` (whose files would be lost), for the
    working directory or one of its parents, and for a symbolic link.
    """
    path = _check_replaceable(Path(path))
    if not path.exists():
        return path
    if path.is_dir() != kind.directory:
        found = "a directory" if path.is_dir() else "a file"
        raise PrunebenchError(f"refusing to replace {path}: it is {found}, not {kind.describe()}")
    if not kind.holds(path):
        raise PrunebenchError(
            f"refusing to replace {path}: it exists and is not {kind.describe()}; "
            "choose a new path or remove it yourself"
        )
    return path


@contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary sibling directory of ``path``, removed unless the block moved it away; a full disk
    or a refused write is a ``PrunebenchError`` naming ``path`` (:func:`writing`)."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should be an ordinary directory
        try:
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


def _replace(path: Path, tmp: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextmanager
def atomic_directory(path: str | os.PathLike, kind: OutputKind) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds.

    ``path`` is checked with :func:`check_output` on entry and again just before it is replaced, so
    only an empty directory or an earlier output of ``kind`` is ever removed.
    """
    path = check_output(path, kind)
    with _staged(path) as tmp:
        yield tmp
        _replace(check_output(path, kind), tmp)


@contextmanager
def updated_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary copy of directory ``path`` (empty if absent) that replaces it on success.

    Nothing in ``path`` is lost but what the block itself removes from the copy. Raises
    ``PrunebenchError`` when ``path`` is a file, a symbolic link, the working directory or a parent of it.
    """
    path = _check_replaceable(Path(path))
    if path.exists() and not path.is_dir():
        raise PrunebenchError(f"refusing to replace {path}: it is a file, not a directory")
    with _staged(path) as tmp:
        if path.is_dir():
            shutil.copytree(path, tmp, dirs_exist_ok=True)
        yield tmp
        _replace(path, tmp)
