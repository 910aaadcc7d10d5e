"""Reading a batch manifest: JSON Lines, CSV with the same columns, or PIE-Bench's ``mapping_file.json``.

One job per line (row, or PIE-Bench entry)::

    {"edit": "swap", "image": "a.png", "source_prompt": "…", "target_prompt": "…", "output": "a-blue.png"}

``edit`` is one of invert, reconstruct, swap, inpaint (``mask``), style (``style``); any option of
the single command is a key, with dashes or underscores (``--no-blend`` → ``no_blend``). Input
paths resolve against the manifest's folder, outputs against the batch's output folder.
Everything that can be checked without the model is checked here, for every line, before any
work: a typo in line 612 should not surface after an hour.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DdimEditError
from ..io import check_output_suffix
from ..options import check_off_flags, option_specs
from .registry import EDIT_SPECS
from .requests import EditSpec, JobSettings

PIE_BENCH_NAME = "mapping_file.json"


class ManifestError(DdimEditError):
    """A manifest line that cannot become a job (syntax, unknown edit or key, bad value)."""


# ---------------------------------------------------------------------- value converters
def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ValueError
    number = float(value)
    if not math.isfinite(number):
        raise ManifestError(f"{key} must be a finite number, got {value!r}")
    return number


def as_float(low: float | None = None) -> Callable[[Any, str], float]:
    def convert(value: Any, key: str) -> float:
        number = _number(value, key)
        if low is not None and number < low:
            raise ManifestError(f"{key} must be ≥ {low:g}, got {value!r}")
        return number
    return convert


def as_int(low: int | None = None, high: int | None = None) -> Callable[[Any, str], int]:
    def convert(value: Any, key: str) -> int:
        number = _number(value, key)
        if number != int(number):
            raise ValueError
        if low is not None and number < low:
            raise ManifestError(f"{key} must be an integer ≥ {low}, got {value!r}")
        if high is not None and int(number) > high:
            raise ManifestError(f"{key} must be an integer ≤ {high}, got {value!r}")
        return int(number)
    return convert


def as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off", ""):
        return False
    raise ValueError


def as_text(value: Any, key: str) -> str:
    if isinstance(value, (dict, list, bool)) or value is None:
        raise ValueError
    return str(value)


def choice(*options: str) -> Callable[[Any, str], str]:
    def convert(value: Any, key: str) -> str:
        text = as_text(value, key)
        if text not in options:
            raise ManifestError(f"{key} must be one of {', '.join(options)}, got {value!r}")
        return text
    return convert


def manifest_keys(*classes: type) -> dict[str, Callable[[Any, str], Any]]:
    """The manifest keys of the options declared on the dataclasses ``classes`` (see
    :mod:`ddim_edit.options`), each with its converter: the option's own parser, else its kind's."""
    keys: dict[str, Callable[[Any, str], Any]] = {}
    for spec in (spec for cls in classes for spec in option_specs(cls)):
        if not spec.manifest:
            continue
        if spec.kind is bool:
            keys[spec.key] = as_bool
        elif spec.multiple:  # a repeatable option's items stay a JSON-like list
            keys[spec.key] = lambda value, key, spec=spec: _as_list(spec.value(value, key))
        elif spec.parse is not None or spec.off is not None:
            keys[spec.key] = spec.value
        elif spec.choices:
            keys[spec.key] = choice(*spec.choices)
        elif spec.kind is float:
            keys[spec.key] = as_float(spec.minimum)
        elif spec.kind is int:
            keys[spec.key] = as_int(None if spec.minimum is None else int(spec.minimum),
                                    None if spec.maximum is None else int(spec.maximum))
        else:
            keys[spec.key] = as_text
        if spec.off_key:
            keys[spec.off_key] = as_bool
    return keys


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------- which keys each edit takes
INPUT_KEYS = ("image", "trajectory", "mask", "style", "content", "source")  # paths against the manifest folder
OUTPUT_KEYS = ("output", "save_trajectory")  # paths against the output folder
_TYPED: dict[type, Callable[[Any, str], Any]] = {str: as_text, bool: as_bool}


@functools.cache
def edit_keys(spec: EditSpec) -> dict[str, Callable[[Any, str], Any]]:
    """Every key a job of edit ``spec`` takes, with its converter: ``edit`` and ``output``, the job
    settings it takes (declared on :class:`JobSettings`), its inputs and its declared options.
    Worked out once per edit (every manifest line asks)."""
    setting_keys = manifest_keys(JobSettings)
    settings = [setting.key for setting in option_specs(JobSettings)
                if setting.group in spec.settings or setting.name in spec.settings]
    return {"edit": as_text, "output": as_text, **{key: setting_keys[key] for key in settings},
            **{key: _TYPED[kind] for key, kind in spec.keys.items()}, **manifest_keys(*spec.options)}


@dataclass
class Job:
    """One manifest line, checked and with its paths resolved.

    Attributes:
        index: position in the manifest (0-based); ``line`` where it was read (1-based).
        fields: the job's keys with converted values (paths absolute).
        output: where the result goes.
        key: a hash of the fields: a changed line is a new job (a rerun does not skip it).
        evaluation_mask: PIE-Bench's annotated edit region (bool [512, 512]) for background PSNR.
        manifest: the manifest file the job was read from (resolved; "" when built by hand).
    """

    index: int
    line: int
    edit: str
    fields: dict[str, Any]
    output: Path
    key: str
    evaluation_mask: np.ndarray | None = field(default=None, repr=False)
    manifest: str = ""

    @property
    def inputs(self) -> list[Path]:
        return [Path(self.fields[name]) for name in INPUT_KEYS if isinstance(self.fields.get(name), str)]


def normalise_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """Dashes to underscores, leading ``--`` dropped; JSON nulls left out ("" is a value: an empty prompt)."""
    return {str(key).strip().lstrip("-").replace("-", "_"): value for key, value in raw.items() if value is not None}


def check_job(raw: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """The edit and its converted fields; a :class:`ManifestError` naming ``where`` otherwise."""
    values = normalise_keys(raw)
    edit = values.get("edit")
    if edit not in EDIT_SPECS:
        raise ManifestError(f"{where}: \"edit\" must be one of {', '.join(EDIT_SPECS)}, got {edit!r}")
    allowed = edit_keys(EDIT_SPECS[edit])
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ManifestError(f"{where}: {edit} has no option {unknown[0]!r}; the keys it takes are "
                            f"{', '.join(sorted(allowed))}")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        try:
            converted[key] = allowed[key](value, key)
        except DdimEditError as exc:
            raise ManifestError(f"{where}: {exc.render(key)}") from None
        except (TypeError, ValueError):
            raise ManifestError(f"{where}: {key} has an unusable value {value!r}") from None
    for options in EDIT_SPECS[edit].options:
        try:
            check_off_flags(options, converted)
        except DdimEditError as exc:
            raise ManifestError(f"{where}: {exc}") from None
    for one_of in EDIT_SPECS[edit].required:
        if not any(name in converted for name in one_of):
            raise ManifestError(f"{where}: {edit} needs \"{one_of[0]}\"" + (f" (or \"{one_of[1]}\")" if len(one_of) > 1 else ""))
    return edit, converted


def resolve_paths(fields: dict[str, Any], base: Path) -> dict[str, Any]:
    """Input paths made absolute against the manifest's folder (absolute ones kept)."""
    resolved = dict(fields)
    for key in INPUT_KEYS:
        if isinstance(resolved.get(key), str):
            path = Path(resolved[key]).expanduser()
            resolved[key] = str(path if path.is_absolute() else (base / path).resolve())
    return resolved


def default_output_name(edit: str, fields: dict[str, Any], index: int) -> str:
    """``00003-photo.swap.png``: the job's position, the input's stem and the edit's suffix."""
    source = fields.get("image") or fields.get("content") or fields.get("trajectory") or "job"
    name = Path(source).name
    for suffix in (".traj.safetensors", Path(name).suffix):
        if suffix and name.endswith(suffix) and name != suffix:
            name = name[: -len(suffix)]
            break
    return f"{index:05d}-{name}{EDIT_SPECS[edit].suffix}"


def inside_out_dir(name: str, out_dir: Path, where: str, key: str) -> Path:
    """``name`` against the output folder, resolved (``..``, ``~``, links); a :class:`ManifestError`
    unless it lies inside that folder."""
    path = Path(name).expanduser()
    folder = out_dir.resolve()
    resolved = (path if path.is_absolute() else folder / path).resolve()
    if resolved == folder or not resolved.is_relative_to(folder):
        raise ManifestError(f"{where}: {key} {name!r} is outside the output folder {folder}; name a file inside it, "
                            f"e.g. {Path(name).name or 'result.png'!r}")
    return resolved


def job_key(edit: str, fields: dict[str, Any]) -> str:
    """A short hash of the job's fields (what makes a rerun skip it only when the line is unchanged)."""
    text = json.dumps({"edit": edit, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_job(raw: dict[str, Any], index: int, line: int, base: Path, out_dir: Path, where: str,
             evaluation_mask: np.ndarray | None = None) -> Job:
    """Check one raw line and resolve its paths and output."""
    edit, fields = check_job(raw, where)
    fields = resolve_paths(fields, base)
    output = inside_out_dir(fields.get("output") or default_output_name(edit, fields, index), out_dir, where, "output")
    kind = "trajectory" if edit == "invert" else "image"
    try:
        check_output_suffix(output, kind, label=f"{where}: output")
        if fields.get("save_trajectory"):
            fields["save_trajectory"] = str(inside_out_dir(fields["save_trajectory"], out_dir, where, "save_trajectory"))
            check_output_suffix(fields["save_trajectory"], "trajectory", label=f"{where}: save_trajectory")
    except DdimEditError as exc:
        raise ManifestError(str(exc)) from None
    fields["output"] = str(output)
    return Job(index, line, edit, fields, output, job_key(edit, fields), evaluation_mask)


# ---------------------------------------------------------------------- the three formats
def read_manifest(path: str | Path, out_dir: str | Path) -> list[Job]:
    """Every job of a manifest (``.jsonl``/``.json`` lines, ``.csv``, or PIE-Bench's ``mapping_file.json``).

    Raises:
        ManifestError: the file is missing or empty, a line is not a job, or two jobs (or a job and
            an input) name the same output.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / PIE_BENCH_NAME
        if not candidate.is_file():
            raise ManifestError(f"{path} is a folder; give the manifest file (JSON Lines, CSV or PIE-Bench's "
                                f"{PIE_BENCH_NAME})")
        path = candidate
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; check the path")
    base, out_dir = path.resolve().parent, Path(out_dir).resolve()
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        jobs = _csv_jobs(text, path, base, out_dir)
    elif _is_pie_bench(text):
        jobs = _pie_bench_jobs(json.loads(text), path, base, out_dir)
    else:
        jobs = _jsonl_jobs(text, path, base, out_dir)
    if not jobs:
        raise ManifestError(f"manifest {path} holds no jobs; write one JSON object per line, e.g. "
                            '{"edit": "invert", "image": "a.png", "prompt": "a cat"}')
    check_distinct_outputs(jobs)
    for job in jobs:
        job.manifest = str(path.resolve())
    return jobs


def _jsonl_jobs(text: str, path: Path, base: Path, out_dir: Path) -> list[Job]:
    jobs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path.name} line {number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where} is not JSON ({exc.msg} at column {exc.colno}); write one JSON object "
                                "per line") from None
        if not isinstance(raw, dict):
            raise ManifestError(f"{where} is not a JSON object; write {{\"edit\": …, \"image\": …}}")
        jobs.append(make_job(raw, len(jobs), number, base, out_dir, where))
    return jobs


def _csv_jobs(text: str, path: Path, base: Path, out_dir: Path) -> list[Job]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "edit" not in [name.strip() for name in reader.fieldnames]:
        raise ManifestError(f"{path.name}: the CSV header must name the columns, \"edit\" among them "
                            "(e.g. edit,image,prompt,output)")
    jobs = []
    for row in reader:
        where = f"{path.name} line {reader.line_num}"
        if None in row:
            raise ManifestError(f"{where} has more cells than the header has columns")
        cells = {key.strip(): _csv_cell(value) for key, value in row.items() if key is not None}
        cells = {key: value for key, value in cells.items() if value != ""}  # an empty cell: the key is absent
        if not cells:
            continue
        jobs.append(make_job(cells, len(jobs), reader.line_num, base, out_dir, where))
    return jobs


def _csv_cell(value: str | None) -> Any:
    """A CSV cell: JSON when it looks like a list or object, else the text."""
    text = (value or "").strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


# ---------------------------------------------------------------------- PIE-Bench
def _is_pie_bench(text: str) -> bool:
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        return False
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return False
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and "image_path" in v for v in data.values()))


def strip_brackets(prompt: str) -> str:
    """PIE-Bench marks edited words with brackets: ``a [cat] sitting`` → ``a cat sitting``."""
    return re.sub(r"\s+", " ", prompt.replace("[", "").replace("]", "")).strip()


def decode_rle_mask(encoded: list[int], shape: tuple[int, int] = (512, 512)) -> np.ndarray:
    """PIE-Bench's run-length mask (pairs of start, length over the flattened image) → bool [H, W].

    As PIE-Bench's own ``mask_decode``, the border pixels are set (annotation errors at the edges).

    Raises:
        ManifestError: not a list of whole-number pairs, or a run that starts outside the image.
    """
    length = shape[0] * shape[1]
    example = "e.g. [1000, 20, 1512, 20]"
    if not isinstance(encoded, list) or len(encoded) % 2:
        raise ManifestError(f"mask must be a list of START, LENGTH pairs (an even count of numbers), {example}")
    for position, value in enumerate(encoded):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ManifestError(f"mask item {position} is {value!r}; a mask holds whole numbers ≥ 0, {example}")
        if position % 2 == 0 and value >= length:
            raise ManifestError(f"mask run {position // 2} starts at {value}, past the {shape[0]}×{shape[1]} image "
                                f"({length} pixels)")
    flat = np.zeros(length, dtype=bool)
    for start, count in zip(encoded[0::2], encoded[1::2]):
        flat[start: min(start + count, length)] = True
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def _pie_text(entry: dict[str, Any], key: str, where: str) -> str:
    """A PIE-Bench entry's text value ("" when absent); a :class:`ManifestError` for a number, list or object."""
    value = entry.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ManifestError(f"{where}: {key} must be text, got {value!r}")
    return value


def _pie_bench_jobs(data: dict[str, dict], path: Path, base: Path, out_dir: Path) -> list[Job]:
    """A prompt swap per entry: ``original_prompt`` → ``editing_prompt``, blending on ``blended_word``."""
    jobs = []
    for number, (name, entry) in enumerate(data.items(), start=1):
        where = f"{path.name} entry {name!r}"
        text = {key: _pie_text(entry, key, where) for key in ("image_path", "original_prompt", "editing_prompt",
                                                               "blended_word")}
        if not text["image_path"].strip():
            raise ManifestError(f"{where}: image_path is empty; name the image, e.g. \"0_random_140/000000000000.jpg\"")
        image = Path(text["image_path"])
        for folder in (base / "annotation_images", base):
            if (folder / image).exists():
                image = folder / image
                break
        source, target = strip_brackets(text["original_prompt"]), strip_brackets(text["editing_prompt"])
        raw: dict[str, Any] = {"edit": "swap", "image": str(image), "source_prompt": source, "target_prompt": target,
                               "mode": "replace" if len(source.split()) == len(target.split()) else "refine",
                               "output": str(Path(text["image_path"]).with_suffix(".png"))}
        words = [word for word in text["blended_word"].split() if word in source.split() or word in target.split()]
        if words:
            raw["blend"] = list(dict.fromkeys(words))
        mask = entry.get("mask")
        try:
            evaluation = decode_rle_mask(mask) if mask not in (None, []) else None
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        jobs.append(make_job(raw, len(jobs), number, base, out_dir, where, evaluation))
    return jobs


def check_distinct_outputs(jobs: list[Job]) -> None:
    """No two jobs may write the same file, and no job may write over any job's input."""
    inputs = {path.resolve() for job in jobs for path in job.inputs}
    seen: dict[Path, Job] = {}
    for job in jobs:
        targets = [job.output] + ([Path(job.fields["save_trajectory"])] if job.fields.get("save_trajectory") else [])
        for target in targets:
            resolved = target.resolve()
            if resolved in inputs:
                raise ManifestError(f"line {job.line}: output {target} is also an input of the batch; "
                                    "name another output")
            if resolved in seen:
                raise ManifestError(f"lines {seen[resolved].line} and {job.line} both write {target}; "
                                    "give each job its own output")
            seen[resolved] = job
