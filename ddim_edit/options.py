"""Each user-facing option of an edit, declared once: on its options dataclass's field.

A field declared with :func:`option` carries an :class:`OptionSpec` in its metadata: the help
text, the flag, the parser that turns command-line text or a manifest's JSON value into the
field's value (raising the library's one-line error), the word that means "off", the choices.
The front ends read those declarations instead of restating them:

* the CLI's flags: ``cli.common.click_options(SwapOptions)``;
* a batch manifest's keys: ``ddim_edit.jobs.manifest.manifest_keys(SwapOptions)``;
* the web page's fields: ``ddim_edit.web.app`` (labels, defaults, choices);
* the options object from either's values: :func:`from_values`.

Adding an option is one :func:`option` field; fields without one are not user-facing. The
declared (field) order is the order of the flags in ``--help``.

Example::

    @dataclass(frozen=True)
    class BlurOptions:
        radius: float = option(2.0, help="Blur radius in pixels.")
        mode: str = option("box", choices=("box", "gauss"), help="Kernel shape.")
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from .errors import DdimEditError

Parse = Callable[[Any, str, str], Any]
"""A parser: (command-line text, a tuple of texts or a JSON value; the option's key; an example value)
→ the field's value, or a :class:`~ddim_edit.errors.DdimEditError` whose ``{field}`` is the key."""

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class OptionSpec:
    """One user-facing option (see :func:`option`; ``name`` and ``default`` come from the field).

    Attributes:
        name: the dataclass field; ``fields``: every field the option sets (``name`` first).
        default: the field's default (a tuple of the fields' defaults for a multi-field option).
        kind: float, int, bool or str: the CLI's and manifest's type when there is no ``parse``.
    """

    name: str
    default: Any
    kind: type
    help: str
    flag: str
    short: str | None = None
    parse: Parse | None = None
    off: str | None = None
    off_flag: str | None = None
    off_help: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    multiple: bool = False
    nargs: int = 1
    minimum: float | None = None
    maximum: float | None = None
    what: str | None = None
    example: str | None = None
    format: Callable[[Any], str] = str
    group: str = ""
    fields: tuple[str, ...] = ()
    cli: bool = True
    manifest: bool = True
    web: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """The manifest key, the click parameter and the ``{field}`` of parse errors: the flag with underscores."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def off_key(self) -> str | None:
        return self.off_flag.lstrip("-").replace("-", "_") if self.off_flag else None

    def shown_default(self) -> str:
        """The default as the CLI writes it: the off word for None, else ``format(default)``."""
        if self.default is None:
            return self.off or ""
        return self.format(self.default)

    def value(self, given: Any, key: str | None = None, parsed: bool = False) -> Any:
        """``given`` (a CLI value, or a manifest's JSON value) → the field's value; ``parsed``: ``given``
        was already converted by the manifest's key (a list of words becomes a tuple)."""
        if self.multiple and isinstance(given, (tuple, list)) and not given and not parsed:
            return self.default
        if given is None:
            return None
        if self.kind is bool:  # a flag flips the default: --blend-latents → True, --no-paste → False
            return (not self.default) if given else self.default
        if parsed:
            return tuple(given) if isinstance(given, list) else given
        if self.off is not None and (given is False or (isinstance(given, str) and given.strip().lower() == self.off)):
            return None
        return self.parse(given, key or self.key, self.example) if self.parse else given


def option(default: Any = _MISSING, *, help: str, factory: Callable[[], Any] | None = None, kind: type | None = None,
           parse: Parse | None = None, flag: str | None = None, short: str | None = None, off: str | None = None,
           off_flag: str | None = None, off_help: str | None = None, choices: tuple[str, ...] | None = None,
           metavar: str | None = None, multiple: bool = False, minimum: float | None = None,
           maximum: float | None = None, what: str | None = None, example: str | None = None,
           format: Callable[[Any], str] = str, group: str = "", also: tuple[str, ...] = (),
           cli: bool = True, manifest: bool = True, web: dict[str, Any] | None = None) -> Any:
    """A dataclass field with its user-facing option (see :class:`OptionSpec`).

    Args:
        default, factory: the field's default (or default factory).
        help: the CLI's help text (``{default}`` is replaced by the shown default).
        kind: the value's type when the default does not say (a None default).
        parse: (value, key, example) → the field's value for command-line text (a tuple of texts
            with ``multiple``) and manifest JSON (see :data:`Parse`). None: the ``kind``'s own
            conversion (click's number types, the manifest's converters).
        flag: the CLI flag (default ``--`` + the field with dashes); the manifest key is the flag
            with underscores (``--no-paste`` → ``no_paste``). A bool field whose default is True
            gets a flag that turns it off.
        off: the word (or JSON ``false``) that means None, shown as the CLI default of a None default.
        off_flag, off_help: a second flag that sets the field to an empty tuple (``--no-blend``).
        choices: the allowed words. metavar: the CLI's placeholder. multiple: a repeatable flag.
        minimum, maximum: the numbers a manifest (and the CLI) accepts. what: how the CLI's error
            names an integer out of range ("a seed in [0, 2^64 - 1]"). example: a value for error hints.
        format: the default as text for the CLI's ``[default: …]``.
        group: a name for options taken together (the job settings' ``schedule``, ``inversion``, …).
        also: further fields set from one value (a tuple), e.g. ``--injection-window START END``.
        cli, manifest: whether the CLI / manifests offer it. web: the page's widget settings.
    """
    spec = dict(help=help, kind=kind, parse=parse, flag=flag, short=short, off=off, off_flag=off_flag,
                off_help=off_help, choices=choices, metavar=metavar, multiple=multiple, minimum=minimum,
                maximum=maximum, what=what, example=example, format=format, group=group, also=also, cli=cli,
                manifest=manifest, web=web)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"option": spec})
    return dataclasses.field(default=default, metadata={"option": spec})


def option_specs(cls: type) -> list[OptionSpec]:
    """The user-facing options of dataclass ``cls``, in field order."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    specs = []
    for field in fields.values():
        declared = field.metadata.get("option")
        if declared is None:
            continue
        declared = dict(declared)
        names = (field.name, *declared.pop("also"))
        defaults = tuple(_default_of(fields[name]) for name in names)
        default = defaults[0] if len(names) == 1 else defaults
        kind = declared.pop("kind") or (type(defaults[0]) if defaults[0] is not None else str)
        flag = declared.pop("flag") or "--" + field.name.replace("_", "-")
        example = declared.pop("example")
        if example is None:
            example = "" if default is None else declared["format"](default)
        specs.append(OptionSpec(name=field.name, default=default, kind=kind, flag=flag, fields=names,
                                nargs=len(names), example=example, **declared))
    return specs


def _default_of(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not _MISSING else field.default


def spec_for(cls: type, name: str) -> OptionSpec:
    """The declared option of field ``name`` of ``cls``."""
    return next(spec for spec in option_specs(cls) if spec.name == name)


def from_values(cls: type, values: dict[str, Any], *, cli: bool = False, parsed: bool = False, **fixed: Any):
    """A ``cls`` from the CLI's or a manifest's values (keyed by :attr:`OptionSpec.key`; absent: the default).

    ``parsed``: the values were converted already (a manifest job's fields). ``fixed`` sets fields
    that are not options (or overrides them). An option given together with its ``off_flag`` is
    refused, naming the flags (``cli``) or the manifest keys.
    """
    return cls(**{**given_values(cls, values, cli=cli, parsed=parsed), **fixed})


def given_values(cls: type, values: dict[str, Any], *, cli: bool = False, parsed: bool = False) -> dict[str, Any]:
    """The fields of ``cls`` that ``values`` sets (see :func:`from_values`), by field name."""
    check_off_flags(cls, values, cli=cli)
    changes: dict[str, Any] = {}
    for spec in option_specs(cls):
        off = bool(spec.off_key and values.get(spec.off_key))
        if spec.key not in values and not off:
            continue
        value = () if off else spec.value(values[spec.key], parsed=parsed)
        changes.update(zip(spec.fields, value) if len(spec.fields) > 1 else {spec.name: value})
    return changes


def changed_options(values: Any) -> list[str]:
    """The keys of the declared options of dataclass instance ``values`` that differ from their defaults."""
    return [spec.key for spec in option_specs(type(values))
            if tuple(getattr(values, name) for name in spec.fields) != (
                spec.default if len(spec.fields) > 1 else (spec.default,))]


def check_off_flags(cls: type, values: dict[str, Any], *, cli: bool = False) -> None:
    """Refuse an option given together with its ``off_flag``, naming the flags (``cli``) or the manifest keys."""
    for spec in option_specs(cls):
        if spec.off_key and values.get(spec.off_key) and values.get(spec.key):
            first, second = (spec.off_flag, spec.flag) if cli else (spec.off_key, spec.key)
            raise DdimEditError(f"{first} and {second} contradict each other; pass one of them")


# ---------------------------------------------------------------------- parsers shared by the options
_SEPARATORS = re.compile(r"[,\s]+")


def finite(value: Any, key: str, example: str) -> float:
    """``value`` (text or number) as a finite float; a one-line error naming ``key`` otherwise."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise DdimEditError(f"{{field}} expects a number, got {value!r}; e.g. {{field}} {example}",
                            field=key, value=value) from None
    if not math.isfinite(number):
        raise DdimEditError(f"{{field}} expects a finite number, got {value!r}; e.g. {{field}} {example}",
                            field=key, value=value)
    return number


def items(value: Any) -> list[Any]:
    """A repeatable value's items: a tuple or list as is, text split at commas."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        return [f"{word}={number}" for word, number in value.items()]
    return str(value).split(",")


def words(value: Any, key: str = "") -> tuple[str, ...]:
    """Words from text (separated by commas or spaces), a list or the CLI's repeated flag."""
    return tuple(word for item in (value if isinstance(value, (list, tuple)) else [value])
                 for word in _SEPARATORS.split(str(item)) if word)


def pair(value: Any, key: str, example: str, what: str = "two numbers") -> tuple[float, float]:
    """Two numbers: a list, a tuple or text ``"A,B"`` / ``"A B"``; ``what`` names them in the error."""
    parts = list(value) if isinstance(value, (list, tuple)) else _SEPARATORS.split(str(value).strip())
    if len(parts) != 2:
        raise DdimEditError(f"{{field}} expects {what}, got {value!r}; e.g. {{field}} {example}",
                            field=key, value=value)
    return finite(parts[0], key, example), finite(parts[1], key, example)
