"""Typed, ranged dataclass fields: one schema for TOML run configs, ``--set`` overrides, keyword
arguments from Python and JSON model configs.

Each field made with ``setting`` carries a ``Rule`` in its metadata. Integers reject booleans and
fractions (an integral float such as ``5e3`` becomes 5000); numbers accept integers; booleans accept
only true/false; ``optional`` fields accept None; choices list what they accept. Unknown keys get a
"did you mean" suggestion from the field names and their aliases (names other projects use).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .devices import DEVICE_FORMS, is_device_name


@dataclass(frozen=True)
class Rule:
    kind: str  # int | float | bool | str | choice | device
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    aliases: tuple[str, ...] = ()

    def describe(self) -> str:
        text = {
            "int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "choice": "one of " + ", ".join(repr(c) for c in self.choices), "device": DEVICE_FORMS,
        }[self.kind] + self.describe_range()
        return text + (" (or unset)" if self.optional else "")

    def describe_range(self) -> str:
        low = f"{self.ge:g}" if self.ge is not None else f"{self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}" if self.le is not None else f"{self.lt:g}" if self.lt is not None else None
        if low is not None and high is not None:
            return f" in {'[' if self.ge is not None else '('}{low}, {high}{']' if self.le is not None else ')'}"
        if low is not None:
            return f" {'>=' if self.ge is not None else '>'} {low}"
        if high is not None:
            return f" {'<=' if self.le is not None else '<'} {high}"
        return ""

    def convert(self, value: Any) -> tuple[bool, Any]:
        """(accepted, normalised value) for the type alone."""
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False, value
            if self.kind == "float":
                return True, float(value)
            return (True, int(value)) if float(value).is_integer() else (False, value)
        if self.kind == "bool":
            return isinstance(value, bool), value
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices, value
        if self.kind == "device":
            return is_device_name(value), value
        return isinstance(value, str), value

    def in_range(self, v: Any) -> bool:
        return not ((self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt)
                    or (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt))

    def check(self, where: str, value: Any) -> Any:
        """``value`` normalised, or a ValueError naming ``where`` and what is accepted."""
        if value is None and self.optional:
            return None
        ok, v = self.convert(value)
        if not ok or not self.in_range(v):
            raise ValueError(f"{where}: expected {self.describe()}, got {value!r}{self.quote_hint(value)}")
        return v

    def quote_hint(self, value: Any) -> str:
        """A quoted number or boolean (``"0.1"``, ``"false"``) would pass without its quotes: say so."""
        if not isinstance(value, str) or self.kind not in ("int", "float", "bool"):
            return ""
        try:
            unquoted = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            return ""
        ok, v = self.convert(unquoted)
        return " (a quoted string: write it without quotes)" if ok and self.in_range(v) else ""


def setting(default: Any, kind: str, *, aliases: Iterable[str] = (), **limits: Any) -> Any:
    """A dataclass field with a default and a ``Rule`` (``ge``/``gt``/``le``/``lt``, ``choices``, ``optional``)."""
    return dataclasses.field(default=default, metadata={"rule": Rule(kind, aliases=tuple(aliases), **limits)})


def rules(cls: type) -> dict[str, Rule]:
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls) if "rule" in f.metadata}


def validate_fields(obj: Any, prefix: str) -> None:
    """Check every ruled field of the dataclass instance ``obj``, storing normalised values."""
    for name, rule in rules(type(obj)).items():
        setattr(obj, name, rule.check(f"{prefix}.{name}", getattr(obj, name)))


def check_values(cls: type, values: Mapping[str, Any], prefix: str) -> None:
    """Check the ruled keys of ``values`` (a config table) against ``cls``'s fields; others are ignored."""
    known = rules(cls)
    for key, value in values.items():
        if key in known:
            known[key].check(f"{prefix}.{key}", value)


def spellings(cls: type) -> dict[str, str]:
    """Field names and their aliases -> field name, for suggestions."""
    out = {}
    for name, rule in rules(cls).items():
        out.update({alias: name for alias in rule.aliases})
        out[name] = name
    return out


def suggest(name: str, candidates: Mapping[str, str] | Iterable[str], fmt: str = "{!r}") -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates`` (a mapping sends aliases to names)."""
    table = dict(candidates) if isinstance(candidates, Mapping) else {c: c for c in candidates}
    match = difflib.get_close_matches(str(name).lower(), list(table), n=1, cutoff=0.6)
    return f" (did you mean {fmt.format(table[match[0]])}?)" if match else ""


def describe_unknown(names: Iterable[str], candidates: Mapping[str, str]) -> str:
    """``'lerning_rate' (did you mean 'lr'?), 'foo'``; the known names when nothing comes close."""
    names = sorted(names)
    parts = [f"{n!r}{suggest(n, candidates)}" for n in names]
    text = ", ".join(parts)
    if not any("did you mean" in p for p in parts):
        text += f"; known: {', '.join(sorted(set(candidates.values())))}"
    return text
