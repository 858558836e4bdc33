"""Loading a data set registered with :func:`flx.register_dataset`: its splits checked and made tensors, a
validation split carved from train when it gives none, a digest of the tensors as its fingerprint.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable


def load_registered(fn: Callable, data_seed: int = 0, **kwargs):
    """(train, test, meta) of a registered data set: its splits as float tensors, a digest as fingerprint."""
    import torch

    from flx.data.base import Split, digest_tensors, split_off
    from flx.data.tables import VAL_FRAC
    from flx.errors import DataError

    accepted = inspect.signature(fn).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    args = {k: v for k, v in {**kwargs, "data_seed": data_seed}.items() if takes_all or k in accepted}
    where = f"data set {fn.__module__}.{fn.__qualname__}"
    out = fn(**args)
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise DataError(
            f"{where} returned {type(out).__name__}; accepted: (train, test) or (train, val, test)"
        )
    splits = []
    for part in out:
        x, y = (part.x, part.y) if isinstance(part, Split) else part
        x = torch.as_tensor(x)
        x = x if x.dtype == torch.uint8 else x.float()
        y = torch.as_tensor(y).float().reshape(-1)
        if len(x) != len(y) or not bool(((y == 0) | (y == 1)).all()):
            raise DataError(f"{where}: each split must be (x, y) of equal length with y in {{0, 1}}")
        splits.append(Split(x.contiguous(), y.contiguous()))
    if len(splits) == 2:
        train, test = splits
        rest, val = split_off(train.y, VAL_FRAC, torch.Generator().manual_seed(data_seed))
        train, val = Split(train.x[rest], train.y[rest]), Split(train.x[val], train.y[val])
    else:
        train, val, test = splits
    meta = {
        "location": f"registered ({fn.__module__}.{fn.__qualname__})",
        "split": "given" if len(splits) == 3 else "given (validation carved from train by flx)",
        "classes": ("negative", "positive"),
        "fingerprint": digest_tensors(train.x, train.y, val.x, val.y, test.x, test.y),
        "val": val,
    }
    return train, test, meta
