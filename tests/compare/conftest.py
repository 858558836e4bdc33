"""The small imbalanced tables the compare tests run on."""

import pandas as pd


def rare_table(path, rows: int, features: int, seed: int, weight: float = 0.8, **columns):
    """A table of ``rows`` rows, ``features`` features (4 or 5 informative), a ``label`` column that is 1 for about
    1 - ``weight`` of them, and any extra ``columns`` (name=values); written to ``path``, returned."""
    from sklearn.datasets import make_classification

    informative = 5 if features >= 8 else 4
    x, y = make_classification(
        rows, features, n_informative=informative, weights=[weight], class_sep=1.0, random_state=seed
    )
    pd.DataFrame(x).assign(label=y, **columns).to_csv(path, index=False)
    return path
