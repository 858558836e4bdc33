"""One accepted value of the constraint table (:data:`flx.experiment.params.PARAMS`): :class:`Param`, its
range or choices, its help, and how a value typed anywhere is checked against it. Its own module so that a
registry entry (a loss with a hyperparameter of its own) can declare one."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from flx.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One accepted value: a number in a range (``open_*`` excludes the bound), an integer, or a choice;
    ``none`` allows the word none (a setting that is off, e.g. no prior initialisation)."""

    name: str
    kind: type  # float, int or str
    help: str
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    choices: Callable[[], tuple] | None = None
    none: bool = False
    text: str = ""  # a str parameter without choices: any non-empty text, described by this
    pattern: str = ""  # a str parameter's regular expression (full match), if any
    path: bool = False  # a file or folder: made absolute (relative to the working folder) when checked
    whole: bool = False  # a list in itself (comma-separated names): one value in a sweep, never a grid

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def accepted(self) -> str:
        if self.text:
            text = self.text
        elif self.choices is not None:
            text = f"one of {', '.join(map(str, self.choices()))}"
        else:
            what = "an integer" if self.kind is int else "a number"
            lo = "(" if self.open_low else "["
            hi = ")" if self.open_high else "]"
            text = f"{what} in {lo}{self.low:g}, {self.high:g}{hi}"
        return text + (", or none" if self.none else "")

    def check(self, value, label: str | None = None):
        """The value in its canonical type (None for 'none'), or ConfigError: '{label} got {value}; accepted: ...'."""
        label = label or self.name
        bad = ConfigError(f"{label} got {show_value(value, self.kind)}; accepted: {self.accepted()}")
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            if self.none:
                return None
            raise bad
        if self.kind is str:
            if not isinstance(value, str) or not value.strip():
                raise bad
            if self.choices is not None and value not in self.choices():
                raise bad
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise bad
            if self.whole:  # 'a, b' -> 'a,b': its parts stripped, each once
                parts = [t.strip() for t in value.split(",")]
                if not all(parts):
                    raise bad
                return ",".join(dict.fromkeys(parts))
            return os.path.abspath(os.path.expanduser(value)) if self.path else value
        if isinstance(value, str):  # command-line text
            try:
                value = float(value.strip())
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        if self.kind is int:
            if value != int(value):
                raise bad
            value = int(value)
        else:
            value = float(value)
        below = value <= self.low if self.open_low else value < self.low
        above = value >= self.high if self.open_high else value > self.high
        if below or above or (self.choices is not None and value not in self.choices()):
            raise bad
        return value


def show_value(value, kind: type = str) -> str:
    """A value as the user typed it: numbers bare (also when typed as text), names quoted."""
    if isinstance(value, str) and kind is not str:
        try:
            float(value)
            return value.strip()
        except ValueError:
            pass
    if isinstance(value, str) or value is None:
        return repr(value)
    return f"{value:g}" if isinstance(value, float) else str(value)
