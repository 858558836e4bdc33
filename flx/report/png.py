"""A figure saved as flx saves every figure: a PNG with no software stamp (the same figure gives the same bytes),
swapped in whole (a full disk leaves no half-written file), then closed."""

from __future__ import annotations

from pathlib import Path

PNG_META = {"Software": None}  # no version strings: the same data gives the same file


def save_png(fig, path: Path) -> Path:
    """``fig`` laid out and written to ``path``, then closed (the caller has chosen matplotlib's backend)."""
    import matplotlib.pyplot as plt

    from flx.results.store import write_atomic

    fig.tight_layout()
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata=PNG_META))
    finally:
        plt.close(fig)
