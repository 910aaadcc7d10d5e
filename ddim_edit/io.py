"""Writing outputs atomically, without overwriting unless asked."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import OutputError


def check_output_path(path: str | Path, force: bool = False) -> Path:
    """Fail early when ``path`` exists (without ``force``) or its folder is missing or unwritable."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputError(f"{path} already exists; pass --force to overwrite or choose another -o")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name with -o")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write to folder {folder}; choose another -o")
    return path


def atomic_write(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = check_output_path(path, force)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        if not force and path.exists():
            raise OutputError(f"{path} appeared while writing; pass --force to overwrite")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (identifies a source image)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
