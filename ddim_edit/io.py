"""Writing outputs atomically, without overwriting unless asked.

Every file written through :func:`atomic_write` is recorded in a small registry
(:func:`written_paths`), so that an interrupted or failed command can say which of its outputs
already exist. :func:`check_outputs` checks all of a command's outputs before any work: each is a
new file in a writable folder, with a suffix that names its format, and no two of them (or an
output and an input) are the same file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import OutputError

# Image outputs: the suffix names the format that is written.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
TRAJECTORY_SUFFIX = ".safetensors"

_written: list[Path] = []


def written_paths() -> list[Path]:
    """The files :func:`atomic_write` has written since the last :func:`reset_written`."""
    return list(_written)


def reset_written() -> None:
    """Forget the written files (the CLI calls this when a command starts)."""
    _written.clear()


def default_output(source: str | Path, suffix: str) -> Path:
    """The default output beside ``source``: its name without its last suffix, plus ``suffix``.

    Dotted stems are kept (``scene.a.png`` → ``scene.a.swap.png``); a trajectory's
    ``.traj.safetensors`` is dropped whole (``photo.traj.safetensors`` → ``photo.recon.png``).
    """
    path = Path(source)
    name = path.name
    if name.endswith(".traj" + TRAJECTORY_SUFFIX):
        stem = name[: -len(".traj" + TRAJECTORY_SUFFIX)]
    elif path.suffix and path.suffix != name:
        stem = name[: -len(path.suffix)]
    else:
        stem = name
    return path.with_name((stem or name) + suffix)


def grid_output(output: str | Path) -> Path:
    """Where ``--grid`` writes the comparison grid: beside ``output`` (``blue.png`` → ``blue.grid.png``)."""
    path = Path(output)
    return path.with_name(path.name[: len(path.name) - len(path.suffix)] + ".grid" + path.suffix)


def check_output_suffix(path: str | Path, kind: str, label: str = "output path") -> None:
    """Refuse an output whose suffix does not name what will be written.

    Args:
        kind: ``image`` (.png, .jpg, .jpeg, .webp), ``trajectory`` (.safetensors) or ``any``.
    """
    suffix = Path(path).suffix.lower()
    if kind == "image" and suffix not in IMAGE_FORMATS:
        raise OutputError(f"{label} {path}: an image is written as PNG, JPEG or WebP; "
                          f"end the name in {', '.join(IMAGE_FORMATS)}")
    if kind == "trajectory" and suffix != TRAJECTORY_SUFFIX:
        raise OutputError(f"{label} {path}: a trajectory is written as safetensors; end the name in {TRAJECTORY_SUFFIX}")


def check_output_path(path: str | Path, force: bool = False, label: str = "output path") -> Path:
    """Fail early when ``path`` is a folder, exists (without ``force``), or its folder is missing or unwritable."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder, not a file; name a file inside it for {label}, e.g. {path / 'out.png'}")
    if path.exists() and not force:
        raise OutputError(f"{path} already exists; pass --force to overwrite or choose another {label}")
    folder = path.parent if str(path.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder; choose another {label}, e.g. {folder.parent / path.name}")
    if not folder.is_dir():
        raise OutputError(f"folder {folder} does not exist; create it first or choose another {label}")
    _probe_folder(folder, label)
    return path


def make_output_folder(folder: str | Path, field: str) -> Path:
    """Create ``folder`` (and its parents) if missing and check that files can be written in it.

    Raises:
        OutputError: about ``field`` (the CLI names its flag) when ``folder`` is a file, cannot be
            created, or is not writable.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{{field}} {folder} is a file; name a folder", field=field)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {{field}} {folder} ({exc.strerror or exc}); choose a folder you can write to",
                          field=field) from None
    _probe_folder(folder, "{field}", field)
    return folder


def _probe_folder(folder: Path, label: str, field: str | None = None) -> None:
    """Create and remove a temporary file in ``folder``: the only reliable writability test (root, /proc, read-only mounts).

    ``label`` may be ``{field}`` with ``field`` set (see :mod:`ddim_edit.errors`)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".ddim-edit-probe.", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write to folder {folder} ({exc.strerror or exc}); choose another {label}",
                          field=field) from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(outputs: Sequence[tuple[str, str | Path | None, str]], force: bool = False,
                  inputs: Iterable[str | Path | None] = ()) -> list[Path | None]:
    """Check all of a command's outputs before any work.

    Args:
        outputs: ``(label, path or None, kind)`` per output; ``kind`` as in :func:`check_output_suffix`.
        force: existing files may be overwritten (never an input, never another output).
        inputs: the command's input files, which no output may name.

    Returns:
        The paths as :class:`Path` (None where not given), in order.

    Raises:
        OutputError: two outputs (or an output and an input) are the same file, or one output is unusable.
    """
    seen: dict[Path, str] = {}
    for raw in inputs:
        if raw is not None:
            seen.setdefault(_identity(raw), "input")
    checked: list[Path | None] = []
    for label, raw, kind in outputs:
        if raw is None or str(raw) == "":
            checked.append(None)
            continue
        path = Path(raw)
        key = _identity(path)
        if key in seen:
            other = seen[key]
            if other == "input":
                raise OutputError(f"{label} {path} is also an input file; write the result to another file")
            raise OutputError(f"{label} and {other} are the same file {path}; give each output its own file name")
        seen[key] = label
        check_output_path(path, force, label)
        check_output_suffix(path, kind, label)
        checked.append(path)
    return checked


def _identity(path: str | Path) -> Path:
    """A path that is the same for two names of one file (resolved symlinks, relative parts)."""
    return Path(os.path.realpath(os.path.abspath(Path(path).expanduser())))


def atomic_write(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place.

    Raises:
        OutputError: ``path`` exists without ``force``, or the system refuses the write (disk full, permissions).
    """
    path = check_output_path(path, force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise
    _written.append(path)
    return path


def _write_error(path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = "free some disk space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "check the folder's permissions"
    return OutputError(f"cannot write {path} ({reason}); {hint} or choose another output path")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (identifies a source image)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
