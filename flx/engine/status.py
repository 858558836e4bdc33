"""When a run has diverged: its loss above ``EXPLODE_FACTOR`` times its first loss (and above ``EXPLODE_FLOOR``),
or not finite.
"""

from __future__ import annotations

EXPLODE_FACTOR = 100.0


EXPLODE_FLOOR = 0.01
