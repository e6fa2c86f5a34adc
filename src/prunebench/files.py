"""Reading files that others wrote: every problem is one ``PrunebenchError`` naming the file.

Safetensors headers are read and checked against the file's size before any library opens the file
(the library's own errors name neither the file nor the problem), and text is decoded with the byte
offset of the first undecodable byte.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any

from prunebench.errors import PrunebenchError

#: The encoding of every text file unless told otherwise (``--encoding``, the study's ``text_encoding``).
DEFAULT_ENCODING = "utf-8"
ENCODING_HINT = "give the file's encoding (--encoding latin-1 on the command line, text_encoding: latin-1 in a study config)"
#: A safetensors header is a small JSON document; safetensors itself refuses one above 100 MB.
MAX_HEADER_BYTES = 100_000_000
_CHUNK = 1 << 20


def safetensors_header(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file declares (name -> ``dtype``, ``shape``, ``data_offsets``).

    Reads only the header and checks it against the file's size. Raises ``PrunebenchError`` naming
    ``path`` when the file cannot be read, is not a safetensors file, or is truncated (its tensors
    end beyond the end of the file).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
                raise PrunebenchError(
                    f"{path} is not a safetensors file: it does not start with the length of a header "
                    f"that fits in its {size} bytes"
                )
            header = json.loads(fh.read(length))
    except OSError as exc:
        raise PrunebenchError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PrunebenchError(f"{path} is not a safetensors file: its header is not JSON") from None
    tensors = _tensors(header, path)
    end = max((entry["data_offsets"][1] for entry in tensors.values()), default=0)
    held = size - 8 - length
    if end > held:
        raise PrunebenchError(
            f"{path} is truncated: its header declares {end} bytes of tensor data, the file holds {held}"
        )
    return tensors


def _tensors(header: Any, path: Path) -> dict[str, dict[str, Any]]:
    """The tensor entries of a parsed header, each with a dtype, a shape and two offsets."""
    if not isinstance(header, dict):
        raise PrunebenchError(f"{path} is not a safetensors file: its header is not a JSON object")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    for name, entry in tensors.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and o >= 0 for o in offsets)
            and isinstance(entry.get("shape"), list)
            and isinstance(entry.get("dtype"), str)
        ):
            raise PrunebenchError(f"{path} is not a safetensors file: tensor {name!r} has no valid entry")
    return tensors


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it; ``PrunebenchError`` otherwise."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise PrunebenchError(f"unknown text encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    return encoding


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def check_decodes(path: str | os.PathLike, encoding: str = DEFAULT_ENCODING) -> None:
    """Raise ``PrunebenchError`` naming the offset of the first byte of ``path`` (uncompressed, for a
    ``.gz`` file) that ``encoding`` cannot decode, or the problem of an unreadable or corrupt file.

    Streams the file in 1 MiB blocks (no copy of it in memory).
    """
    path = Path(path)
    decoder = codecs.getincrementaldecoder(check_encoding(encoding))()
    offset = 0
    try:
        with _open_bytes(path) as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    raise _not_encoded(path, encoding, offset + exc.start, block[exc.start]) from None
                offset += len(block)
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise _not_encoded(path, encoding, offset, None) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise _unreadable(path, exc) from None


def _not_encoded(path: Path, encoding: str, offset: int, byte: int | None) -> PrunebenchError:
    what = "an incomplete character at the end" if byte is None else f"byte 0x{byte:02x} at offset {offset}"
    where = " of the uncompressed text" if path.name.endswith(".gz") else ""
    return PrunebenchError(f"{path} is not {encoding} text: {what}{where} cannot be decoded; {ENCODING_HINT}")


def _unreadable(path: Path, exc: BaseException) -> PrunebenchError:
    if isinstance(exc, OSError) and exc.strerror:
        return PrunebenchError(f"cannot read {path}: {exc.strerror}")
    return PrunebenchError(f"cannot read {path}: not a complete gzip file ({exc})")


def read_text_file(path: str | os.PathLike, encoding: str = DEFAULT_ENCODING) -> str:
    """The text of a ``.txt`` or ``.txt.gz`` file (universal newlines, as Python's text mode reads it).

    Raises ``PrunebenchError`` naming the file for an unreadable or corrupt file and, for text that
    ``encoding`` cannot decode, the offset of the first bad byte.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding=check_encoding(encoding)) as fh:
            return fh.read()
    except UnicodeDecodeError:
        check_decodes(path, encoding)  # finds the offset in the whole file and raises
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise _unreadable(path, exc) from None
