"""A minimal Debian binary package built in a test, for the readers of Debian packages."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def make_deb(path: Path, files: dict[str, bytes]) -> Path:
    """A minimal binary .deb (ar archive with debian-binary, control.tar.xz, data.tar.xz)."""

    def tar_xz(entries: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:xz") as tar:
            for name, data in entries.items():
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    members = {"debian-binary": b"2.0\n", "control.tar.xz": tar_xz({}), "data.tar.xz": tar_xz(files)}
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(bytes(out))
    return path
