"""Tables as they come: what flx does to a user's table before training on it, said in one line per run.

- the delimiter of a ``.csv`` is sniffed (``,`` ``;`` tab or ``|``);
- ID-like columns are dropped: named like an id (``id``, ``customerID``, ``user_id``, ``uuid``), holding one
  text value per row, or numbering the rows (distinct consecutive integers, such as a saved index); a number
  column whose values are merely distinct is a measurement, and is kept;
- ``--drop COL,...`` drops more;
- text and categorical columns are one-hot encoded (a missing value is a category of its own), numeric columns
  with missing values are imputed with the training rows' median and get an indicator column
  (scikit-learn's ``OneHotEncoder`` and ``SimpleImputer(add_indicator=True)``), everything fitted on the training
  split only.

A table of complete numeric columns goes through untouched (its features are exactly the columns), so its runs
keep their numbers and keys.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from flx.errors import DataError

ID_WORDS = {"id", "ids", "uuid", "guid", "identifier"}
MIN_ROWS_FOR_UNIQUE = 20  # below this, every column may hold one value per row by chance


def sniff_delimiter(path: Path) -> str:
    """The delimiter of a text table: ``,`` ``;`` tab or ``|``, sniffed from its first 64 KB (``,`` if unsure)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(65536)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def named_like_id(name: str) -> bool:
    """``id``, ``ID``, ``customerID``, ``user_id``, ``Patient Id``, ``id_number``, ``uuid``; not ``paid``,
    ``PAID`` or ``idea``."""
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)]
    return bool(words) and (words[-1] in ID_WORDS or (words[0] == "id" and len(words) > 1))


def id_like(df, columns: list[str]) -> dict[str, str]:
    """Column -> why it looks like an identifier, not a feature."""
    out = {}
    for c in columns:
        values = df[c]
        if named_like_id(c):
            out[c] = "named like an id"
        elif len(df) >= MIN_ROWS_FOR_UNIQUE and values.notna().all() and values.nunique() == len(df):
            if values.dtype.kind in "OUS":
                out[c] = "one text value per row"
            elif values.dtype.kind in "iu" and values.max() - values.min() + 1 == len(df):
                out[c] = "a row number"
    return out


@dataclass
class Preparation:
    """What was done to a table's columns, fitted on its training rows (:meth:`fit`), applied to every split
    (:meth:`transform`)."""

    features: list[str]
    dropped: dict[str, str] = field(default_factory=dict)  # column -> why
    text: list[str] = field(default_factory=list)  # one-hot encoded
    imputed: dict[str, int] = field(default_factory=dict)  # numeric column -> missing values in training rows
    transformer: object = None  # scikit-learn's ColumnTransformer, None for complete numeric tables

    @classmethod
    def fit(cls, train, columns: list[str], dropped: dict[str, str], where: str) -> Preparation:
        """Decide each column's treatment from the training rows ``train`` (a DataFrame) and fit it there."""
        import numpy as np
        import pandas as pd

        features = [c for c in columns if c not in dropped]
        if not features:
            raise DataError(f"{where}: no feature columns left besides the label and the dropped ones")
        numeric = [
            c
            for c in features
            if pd.api.types.is_numeric_dtype(train[c]) or pd.api.types.is_bool_dtype(train[c])
        ]
        text = [c for c in features if c not in numeric]
        values = train[numeric].to_numpy(dtype=np.float64)
        if np.isinf(values).any():
            bad = [c for c in numeric if np.isinf(train[c].to_numpy(dtype=np.float64)).any()]
            raise DataError(f"{where}: infinite values in feature column(s) {', '.join(map(repr, bad))}")
        imputed = {c: int(train[c].isna().sum()) for c in numeric if train[c].isna().any()}
        prep = cls(features, dict(dropped), text, imputed)
        if text or imputed:
            prep.transformer = _transformer(numeric, text, imputed).fit(prep._frame(train))
        return prep

    def _frame(self, df):
        """The feature columns, text ones as str (a column of mixed types encodes as its text)."""
        out = df[self.features].copy()
        for c in self.text:
            out[c] = out[c].map(lambda v: v if v != v or v is None else str(v)).astype(object)
        return out

    def transform(self, df):
        """(N, D) float64 features of ``df``'s rows."""
        import numpy as np

        if self.transformer is None:
            x = df[self.features].to_numpy(dtype=np.float64)
        else:
            x = np.asarray(self.transformer.transform(self._frame(df)), dtype=np.float64)
        return x if x.flags.writeable else x.copy()  # torch takes writable arrays

    def describe(self) -> str:
        """One line of what was done, or '' when nothing was."""
        parts = []
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{c} ({why})" for c, why in self.dropped.items()))
        if self.text:
            parts.append(f"one-hot encoded {', '.join(self.text)} (a missing value is a category)")
        if self.imputed:
            parts.append(
                "imputed the training median with an indicator column in "
                + ", ".join(f"{c} ({n} missing)" for c, n in self.imputed.items())
            )
        return "; ".join(parts) + (" (fitted on the training split)" if self.transformer is not None else "")


def _transformer(numeric: list[str], text: list[str], imputed: dict):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    parts = []
    complete = [c for c in numeric if c not in imputed]
    if complete:
        parts.append(("numeric", "passthrough", complete))
    if imputed:
        parts.append(("imputed", SimpleImputer(strategy="median", add_indicator=True), list(imputed)))
    if text:
        encode = make_pipeline(
            SimpleImputer(strategy="constant", fill_value="(missing)"),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
        )
        parts.append(("text", encode, text))
    return ColumnTransformer(parts, sparse_threshold=0.0)
