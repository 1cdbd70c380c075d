"""Typed config values: a config's defaults are its declaration, and each key's type follows its default.

Types by default value: ``true``/``false`` -> bool; ``3`` -> int; ``3.0`` -> number (ints accepted); a string ->
str; a list -> list; a mapping -> mapping, whose keys are checked in turn (unknown keys are refused, naming the
known ones); ``null`` -> anything. A :class:`Schema` adds two things the defaults cannot say: ``open`` mappings,
whose keys are free-form (their values are not checked), and ``types``, which replace a key's inferred type with
``|``-separated names from bool, int, number, str, list, mapping, null, any (``int|str``, ``mapping|null``).

Node parameters (configs/node/<kind>.yaml, :mod:`realloop.robot.args`) and the hydra CLIs (realloop-collect,
realloop-train, realloop-eval: :func:`compose_checked`) are checked this way; a bad key or value raises
:class:`ConfigError`, a ``ValueError`` whose message is one line naming the key.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from omegaconf import DictConfig

TYPE_NAMES = {
    "bool": "true or false",
    "int": "an integer",
    "number": "a number",
    "str": "a string",
    "list": "a list",
    "mapping": "a mapping",
    "null": "null",
    "any": "anything",
}


class ConfigError(ValueError):
    """A config key that is not declared, or a value of the wrong type or out of range; one line naming the key."""


def parse_type(spec: str, where: str) -> tuple[str, ...]:
    """``"int|str"`` -> ``("int", "str")``; raises ConfigError naming ``where`` for an unknown type name."""
    names = tuple(s.strip() for s in str(spec).split("|"))
    bad = [n for n in names if n not in TYPE_NAMES]
    if bad:
        raise ConfigError(f"{where}: unknown type {bad[0]!r}; use {', '.join(TYPE_NAMES)} (joined by '|')")
    return names


def inferred_type(default: Any) -> tuple[str, ...]:
    """The type a default declares (see the module doc)."""
    if isinstance(default, bool):
        return ("bool",)
    if isinstance(default, int):
        return ("int",)
    if isinstance(default, float):
        return ("number",)
    if isinstance(default, str):
        return ("str",)
    if isinstance(default, (list, tuple)):
        return ("list",)
    if isinstance(default, Mapping):
        return ("mapping",)
    return ("any",)


def matches(value: Any, kinds: Iterable[str]) -> bool:
    kinds = set(kinds)
    if "any" in kinds:
        return True
    if value is None:
        return "null" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return bool(kinds & {"int", "number"})
    if isinstance(value, float):
        return "number" in kinds
    if isinstance(value, str):
        return "str" in kinds
    if isinstance(value, (list, tuple)):
        return "list" in kinds
    if isinstance(value, Mapping):
        return "mapping" in kinds
    return False


def describe(kinds: Sequence[str]) -> str:
    return " or ".join(TYPE_NAMES[k] for k in kinds)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lookup(tree: Any, path: str) -> tuple[bool, Any]:
    node = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


@dataclass(frozen=True)
class Schema:
    """Declared keys: ``defaults`` (types inferred from them), ``open`` mappings (dotted paths; free-form keys)
    and ``types`` (dotted path -> type names replacing the inferred ones)."""

    defaults: Mapping[str, Any]
    open: frozenset[str] = frozenset()
    types: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in [*self.open, *self.types]:
            if not _lookup(self.defaults, path)[0]:
                raise ConfigError(f"_open/_types name {path!r}, which has no default")

    @classmethod
    def from_declaration(cls, data: Mapping[str, Any], where: str) -> Schema:
        """A schema from a YAML mapping of defaults with the optional ``_open: [path, ...]`` and
        ``_types: {path: int|str, ...}`` keys (which are not parameters themselves)."""
        data = dict(data)
        open_ = data.pop("_open", None) or []
        types = data.pop("_types", None) or {}
        if not isinstance(open_, list) or not all(isinstance(p, str) for p in open_):
            raise ConfigError(f"{where}: _open must be a list of dotted keys, got {open_!r}")
        if not isinstance(types, Mapping):
            raise ConfigError(f"{where}: _types must map dotted keys to types (rate_hz: number|null), got {types!r}")
        parsed = {str(k): parse_type(v, f"{where}: _types.{k}") for k, v in types.items()}
        try:
            return cls(data, frozenset(open_), parsed)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def kinds(self, path: str, default: Any) -> tuple[str, ...]:
        """The types a value at ``path`` (whose default is ``default``) may have."""
        if path in self.types:
            return self.types[path]
        if path in self.open:
            return ("mapping",) if isinstance(default, Mapping) else ("mapping", "null")
        return inferred_type(default)

    def check(self, values: Mapping[str, Any], owner: str = "", noun: str = "parameter") -> None:
        """Raise ConfigError for the first key ``values`` has that the schema does not declare (outside open
        mappings), or the first value of a type its key does not allow. ``owner`` (``node camera``) and ``noun``
        word the message."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{noun}s{_of(owner)} must be a mapping, got {_short(values)}")
        self._check_mapping(values, self.defaults, "", owner, noun)

    def check_key(self, path: str, owner: str = "", noun: str = "parameter") -> None:
        """Raise ConfigError when a dotted key is not declared (its first undeclared part is named)."""
        node: Any = self.defaults
        prefix = ""
        for part in path.split("."):
            here = f"{prefix}.{part}" if prefix else part
            if prefix in self.open or node is None:
                return
            if not isinstance(node, Mapping):
                raise ConfigError(
                    f"{noun} {prefix!r}{_of(owner)} is {describe(self.kinds(prefix, node))}, "
                    f"not a mapping: it has no key {part!r}"
                )
            if part not in node:
                raise self._unknown(here, part, node, prefix, owner, noun)
            node, prefix = node[part], here

    def _unknown(
        self, path: str, key: Any, declared: Mapping[str, Any], prefix: str, owner: str, noun: str
    ) -> ConfigError:
        names = sorted(str(k) for k in declared)
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" (did you mean {(prefix + '.' if prefix else '') + close[0]!r}?)" if close else ""
        known = ", ".join(f"{prefix}.{n}" if prefix else n for n in names) or "none"
        where = f" for {owner}" if owner else ""
        return ConfigError(f"unknown {noun} {path!r}{where}{hint}; known: {known}")

    def _check_mapping(
        self, values: Mapping[Any, Any], declared: Mapping[str, Any], prefix: str, owner: str, noun: str
    ) -> None:
        for key, value in values.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in declared:
                raise self._unknown(path, key, declared, prefix, owner, noun)
            default = declared[key]
            kinds = self.kinds(path, default)
            if not matches(value, kinds):
                raise ConfigError(f"{noun} {path!r}{_of(owner)} must be {describe(kinds)}, got {_short(value)}")
            if isinstance(value, Mapping) and isinstance(default, Mapping) and path not in self.open:
                self._check_mapping(value, default, path, owner, noun)


def _of(owner: str) -> str:
    return f" of {owner}" if owner else ""


Bounds = Mapping[str, tuple[float | None, float | None]]


def check_choices(values: Mapping[str, Any], choices: Mapping[str, Sequence[Any]]) -> None:
    """``choices``: dotted key -> the values it may take."""
    for path, allowed in choices.items():
        found, v = _lookup(values, path)
        if found and not any(v == a and type(v) is type(a) for a in allowed):
            raise ConfigError(f"{path}={v!r} must be one of {', '.join(map(repr, allowed))}")


def check_bounds(values: Mapping[str, Any], bounds: Bounds) -> None:
    """``bounds``: dotted key -> (lowest, highest) allowed, either None for no limit; null values pass."""
    for path, (low, high) in bounds.items():
        found, v = _lookup(values, path)
        if not found or v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if (low is not None and v < low) or (high is not None and v > high):
            need = (
                f"in [{low}, {high}]"
                if low is not None and high is not None
                else f">= {low}"
                if low is not None
                else f"<= {high}"
            )
            raise ConfigError(f"{path}={v} must be {need}")


# -- hydra CLIs ---------------------------------------------------------------------------------------------------
def _hydra_message(e: BaseException) -> str:
    """One line from a hydra error (its report spans several, with hints and the config search path)."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options is not None:
        group, _, name = str(e.missing_cfg_file).rpartition("/")
        known = [o for o in e.options if not o.startswith("_")]
        return f"no {group or 'config'} config {name!r}; known: {', '.join(known) or 'none'}"
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("See https://", "Config search path", "provider="))]
    return "; ".join(lines[:2]) or type(e).__name__


def _refuse_partial(group: str, name: str) -> None:
    """A group option whose name starts with ``_`` (``task=_arm``) is a partial other configs extend, not a
    config to select: refuse it like an unknown option, listing the real ones."""
    if name.startswith("_"):
        from . import config_names

        known = ", ".join(config_names(group)) or "none"
        raise ConfigError(
            f"no {group} config {name!r} ({group}/{name}.yaml is a partial that other {group} configs extend); "
            f"known: {known}"
        )


def compose_checked(
    config_name: str,
    overrides: Sequence[str] = (),
    *,
    open: Iterable[str] = (),
    types: Mapping[str, str] | None = None,
    bounds: Bounds | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
) -> Any:
    """:func:`realloop.configs.compose` with every key and value checked: the declaration is the config composed
    with the same config-group choices (``task=arm_reach``) and no other override; ``open``, ``types``,
    ``bounds`` and ``choices`` (dotted keys) add what its defaults cannot say. Raises ConfigError (one line naming
    the key) for an override hydra cannot parse, an unknown group option or key (``+key=`` included), a wrong
    type, a value out of bounds or not among its choices; returns the omegaconf ``DictConfig``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from . import CONFIG_DIR, compose

    owner = f"the {config_name} config"
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(_hydra_message(e)) from None
    groups: list[str] = []
    keys: list[str] = []
    for o in parsed:
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        if "." not in key and isinstance(o.value(), str) and (CONFIG_DIR / key).is_dir():
            assert o.input_line is not None  # the parser sets it on every override
            _refuse_partial(key, str(o.value()))
            groups.append(o.input_line)
        else:
            keys.append(key)
    try:
        declared = to_plain(compose(config_name, groups))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_hydra_message(e)) from None
    schema = Schema(declared, frozenset(open), {k: parse_type(v, f"type of {k}") for k, v in (types or {}).items()})
    for key in keys:
        schema.check_key(key, owner, "key")
    try:
        cfg = compose(config_name, overrides)
        values = to_plain(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(_hydra_message(e)) from None
    schema.check(values, owner, "key")
    check_bounds(values, bounds or {})
    check_choices(values, choices or {})
    return cfg


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """A DictConfig as plain dicts and lists, interpolations resolved (the keys of a YAML config are strings)."""
    from omegaconf import OmegaConf

    return cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True))


def exit_on_config_error(
    prog: str, compose_config: Callable[[Sequence[str]], Any], argv: Sequence[str] | None = None
) -> None:
    """Check a hydra CLI's overrides (``compose_config(argv)``) before hydra's app composes them: a config error
    ends the process with ``<prog>: error: <one line>`` and exit code 2. Command lines with hydra's own flags
    (``--cfg``, ``-m``, ``--help``) go to hydra as they are."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith("-") for a in argv):
        return
    try:
        compose_config(argv)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
