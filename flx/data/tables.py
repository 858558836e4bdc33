"""Your own tables: the ``table`` data set. A CSV (its delimiter sniffed), TSV or parquet file (read with pandas;
parquet through pyarrow) of feature columns and a label column; ``positive`` names the minority class (default:
the rarest label value; matched without regard to case), every other value is negative. Tables are taken as
they come (:mod:`flx.data.prepare`): ID-like columns dropped, text columns one-hot encoded, missing numbers
imputed with an indicator, fitted on the training split; the run's record says what was done (``data_prep``).

Splits, in this order of precedence:

- ``split_column``: a column whose values say each row's split: train, val (or valid, validation) and test;
  without val rows the validation rows are carved from train (:data:`VAL_FRAC` of each class);
- ``test``: a second file with the same columns holds the test rows; validation is carved from the first;
- neither: flx splits the rows per class, :data:`TEST_FRAC` test, then :data:`VAL_FRAC` of the rest
  validation (seeded by ``data_seed``).

Features are standardized with the training rows' mean and standard deviation. Everything a user can get
wrong (a missing file or column, one class, infinite values in a feature, a split without both classes) is a
:class:`~flx.errors.DataError` naming the file and the problem. The fingerprint is a digest of
the files' content (:func:`flx.data.files_fingerprint`), so a moved file keeps its runs' keys.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flx.data.prepare import Preparation, id_like, sniff_delimiter
from flx.errors import DataError

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
SPLIT_VALUES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
TEST_FRAC = 0.2
VAL_FRAC = 0.1


def read_table(path: str | Path):
    """The file as a pandas DataFrame; DataError when it is missing, of an unknown kind or unreadable."""
    import pandas as pd

    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: not a table flx reads; accepted: {', '.join(SUFFIXES)} files")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if kind == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if kind == "tsv" else sniff_delimiter(path))
    except ImportError as exc:  # parquet without pyarrow
        raise DataError(f"{path}: reading parquet needs pyarrow ({exc}); pip install pyarrow") from None
    except Exception as exc:  # pandas raises many kinds for a malformed file
        raise DataError(f"{path}: cannot be read as {kind} ({type(exc).__name__}: {exc})") from None
    if len(df) == 0:
        raise DataError(
            f"{path}: no rows (only a header: {', '.join(map(str, df.columns))}); give a table with rows"
        )
    return df


def _check_categorical(values, label: str, where: str) -> None:
    """DataError for a label column of non-integer numbers with more than two values: a continuous target,
    which flx (a classifier of one class against the rest) would split into meaningless classes."""
    import numpy as np

    if values.dtype.kind != "f":
        return
    finite = values.to_numpy(dtype=float)
    distinct = np.unique(finite)
    if len(distinct) > 2 and not np.all(distinct == np.round(distinct)):
        shown = ", ".join(f"{v:g}" for v in distinct[:3])
        raise DataError(
            f"{where}: the label column {label!r} holds {len(distinct)} distinct non-integer numbers ({shown}, ...): "
            "a continuous target; flx needs classes (make one, e.g. a column score > threshold, and give it as --label)"
        )


def _label_text(values):
    """Label values as text, integers without a trailing .0 (so --positive 1 matches a float column of 0/1)."""
    import pandas as pd

    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype("string")


def _split_rows(df, path, y_all, g, label, positive, split_column, test):
    """The rows of each split: indices into ``df`` (train, val, test; or a test table of its own), their labels,
    how they were split, and the other files they came from: a split column, a test file, or flx's stratified
    split."""
    import numpy as np
    import torch

    from flx.data.base import split_off

    where = str(path)
    files, frames = [], {}
    if split_column is not None:
        given = df[split_column].astype(str).str.strip().str.lower()
        unknown = sorted(set(given) - set(SPLIT_VALUES))
        if unknown:
            raise DataError(
                f"{where}: split column {split_column!r} holds {', '.join(map(repr, unknown[:5]))}; "
                f"accepted values: {', '.join(SPLIT_VALUES)}"
            )
        part = given.map(SPLIT_VALUES).to_numpy()
        idx = {s: torch.from_numpy(np.nonzero(part == s)[0]) for s in ("train", "val", "test")}
        if len(idx["val"]) == 0:
            base = idx["train"]
            keep, val = split_off(y_all[base], VAL_FRAC, g)
            idx["train"], idx["val"] = base[keep], base[val]
        split = f"given (column {split_column!r})"
    elif test is not None:
        test_path = Path(test)
        tdf = read_table(test_path)
        tdf.columns = [str(c) for c in tdf.columns]
        missing = [c for c in df.columns if c not in tdf.columns]
        if missing:
            raise DataError(
                f"{test_path}: column(s) {', '.join(map(repr, missing))} of {path.name} are missing"
            )
        if tdf[label].isna().any():
            raise DataError(
                f"{test_path}: the label column {label!r} has {int(tdf[label].isna().sum())} empty value(s)"
            )
        rest, val = split_off(y_all, VAL_FRAC, g)
        idx = {"train": rest, "val": val}
        frames["test"] = tdf
        split = f"given (test rows from {test_path.name})"
        files.append(test_path)
    else:
        rest, test_idx = split_off(y_all, TEST_FRAC, g)
        train_idx, val_idx = split_off(y_all[rest], VAL_FRAC / (1 - TEST_FRAC), g)
        idx = {"train": rest[train_idx], "val": rest[val_idx], "test": test_idx}
        split = f"stratified {1 - TEST_FRAC - VAL_FRAC:.0%}/{VAL_FRAC:.0%}/{TEST_FRAC:.0%} by flx"
    for name, i in idx.items():
        frames[name] = df.iloc[i.numpy()]
    ys = {name: y_all[i] for name, i in idx.items()}
    if "test" not in ys:
        labels = _label_text(frames["test"][label])
        ys["test"] = torch.from_numpy((labels == positive).to_numpy(dtype=np.float32))
    return frames, ys, split, files


def _positive(positive: str | None, counts, label: str, where: str) -> str:
    """The positive label value: as given (matched without regard to case when only one value matches so),
    else the rarest value."""
    if positive is None:  # the rarest value (ties: the last in sorted order)
        return str(min(sorted(counts.index, reverse=True), key=lambda v: counts[v]))
    if positive in counts.index:
        return positive
    same = [v for v in counts.index if str(v).lower() == positive.lower()]
    if len(same) == 1:
        return str(same[0])
    values = ", ".join(map(str, sorted(counts.index)[:20]))
    raise DataError(f"{where}: --positive {positive!r} is not a value of {label!r}; values: {values}")


def _check_columns(columns: list[str], label: str, split_column, drop: str | None, where: str) -> list[str]:
    """The columns that ``drop`` names (DataError for a name that is not a column, or names the label or the
    split column), after checking that the label and split column are columns."""
    dropped = drop.split(",") if drop else []
    for name, what in (
        (label, "--label"),
        (split_column, "--split-column"),
        *((d, "--drop") for d in dropped),
    ):
        if name is not None and name not in columns:
            raise DataError(f"{where}: {what} {name!r} is not a column; columns: {', '.join(columns)}")
    if label in dropped or split_column in dropped:
        raise DataError(
            f"{where}: --drop {drop!r} names the label or split column; give feature columns only"
        )
    return dropped


def load_table(
    data: str, label: str | None = None, positive: str | None = None, test: str | None = None,
    split_column: str | None = None, data_seed: int = 0, drop: str | None = None, **_,
):  # fmt: skip
    """(train, test, meta) of a user's table, ``meta["val"]`` the validation split (see the module's doc)."""
    import numpy as np
    import torch

    from flx.data.base import Split, files_fingerprint

    path = Path(data)
    df = read_table(path)
    where = str(path)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if label is None:
        raise DataError(f"{where}: give --label, the column holding the class; columns: {', '.join(columns)}")
    dropped = _check_columns(columns, label, split_column, drop, where)
    if df[label].isna().any():
        raise DataError(
            f"{where}: the label column {label!r} has {int(df[label].isna().sum())} empty value(s)"
        )
    _check_categorical(df[label], label, where)
    labels = _label_text(df[label])
    counts = labels.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"{where}: the label column {label!r} holds one class ({counts.index[0]!r}); two are needed"
        )
    positive = _positive(positive, counts, label, where)
    others = [str(v) for v in sorted(counts.index) if v != positive]
    negative = others[0] if len(others) == 1 else f"not {positive}"
    columns = [c for c in columns if c not in (label, split_column)]
    if not columns:
        raise DataError(f"{where}: no feature columns besides the label; give a table with features")
    y = (labels == positive).to_numpy(dtype=np.float32)
    g = torch.Generator().manual_seed(data_seed)
    files = [path]
    frames, ys, split, extra = _split_rows(
        df, path, torch.from_numpy(y), g, label, positive, split_column, test
    )
    files += extra
    prep = Preparation.fit(
        frames["train"], columns, {**id_like(df, columns), **dict.fromkeys(dropped, "--drop")}, where
    )
    xs = {name: torch.from_numpy(prep.transform(frame)) for name, frame in frames.items()}
    for name in ("train", "val", "test"):
        n_pos = int(ys[name].sum())
        if n_pos == 0 or n_pos == len(ys[name]):
            raise DataError(
                f"{where}: the {name} split holds {len(ys[name])} rows of one class ({n_pos} {positive!r}); "
                "each split needs both classes"
            )
    mean = xs["train"].mean(0)
    std = xs["train"].std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    splits = {s: Split(((xs[s] - mean) / std).float().contiguous(), ys[s].contiguous()) for s in xs}
    # content only: the same table under another name or folder keeps its runs' keys
    prints = [files_fingerprint(p.resolve(), [p.resolve()]) for p in files]
    fingerprint = (
        prints[0]
        if len(prints) == 1
        else "sha256:" + hashlib.sha256(" ".join(prints).encode()).hexdigest()[:32]
    )
    meta = {
        "location": " + ".join(str(p.resolve()) for p in files),
        "split": split,
        "classes": (negative, positive),
        "fingerprint": fingerprint,
        "val": splits["val"],
        "features": prep.features,
    }
    if prep.describe():
        meta["extra"] = {"data_prep": prep.describe()}  # in the run's record, and on flx compare's page
    return splits["train"], splits["test"], meta
