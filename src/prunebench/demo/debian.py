"""Fetch a Debian binary package with ``apt-get download`` and read files out of it in pure Python.

A ``.deb`` is an ``ar`` archive holding ``debian-binary``, ``control.tar.*`` and ``data.tar.*``; the
installed files live in ``data.tar.*``. Reading it directly avoids needing ``dpkg`` or root.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from prunebench.errors import PrunebenchError

_AR_MAGIC = b"!<arch>\n"


def find_or_download(package: str, deb_dir: str | Path, download: bool = True) -> Path:
    """Return the path of ``package``'s ``.deb`` in ``deb_dir``, running ``apt-get download`` if absent."""
    deb_dir = Path(deb_dir)
    found = sorted(deb_dir.glob(f"{package}_*.deb"))
    if not found and download:
        if shutil.which("apt-get") is None:
            raise PrunebenchError(
                f"{package}: no {package}_*.deb in {deb_dir} and no apt-get to download it; "
                f"fetch it on a Debian machine with `apt-get download {package}` and pass its folder"
            )
        deb_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["apt-get", "download", package], cwd=deb_dir, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise PrunebenchError(f"{package}: `apt-get download {package}` failed: {last}")
        found = sorted(deb_dir.glob(f"{package}_*.deb"))
    if not found:
        raise PrunebenchError(
            f"{package}: no {package}_*.deb in {deb_dir}; run `apt-get download {package}` there"
        )
    return found[-1]


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (recorded in the NOTICE so a rebuild can be checked)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _ar_members(data: bytes, deb: Path) -> dict[str, bytes]:
    if not data.startswith(_AR_MAGIC):
        raise PrunebenchError(f"{deb}: not a Debian package (no ar archive header)")
    members: dict[str, bytes] = {}
    pos = len(_AR_MAGIC)
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise PrunebenchError(f"{deb}: corrupt ar member header for {name!r}") from exc
        members[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def read_members(deb: str | Path, paths: list[str]) -> dict[str, bytes]:
    """Read the installed files ``paths`` (e.g. ``usr/share/wordnet/data.noun``) out of ``deb``.

    Raises a :class:`PrunebenchError` naming the package and the missing file when the layout differs.
    """
    deb = Path(deb)
    if not deb.is_file():
        raise PrunebenchError(f"{deb}: package file not found")
    members = _ar_members(deb.read_bytes(), deb)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise PrunebenchError(f"{deb}: no data.tar.* member; not a binary Debian package")
    wanted = {p.lstrip("./") for p in paths}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(members[data_name])) as tar:
            for info in tar:
                name = info.name.lstrip("./")
                if name in wanted and info.isfile():
                    out[name] = tar.extractfile(info).read()
    except tarfile.TarError as exc:
        raise PrunebenchError(f"{deb}: cannot read {data_name}: {exc}") from exc
    missing = sorted(wanted - out.keys())
    if missing:
        raise PrunebenchError(f"{deb}: unexpected layout, missing {', '.join(missing)}")
    return out
