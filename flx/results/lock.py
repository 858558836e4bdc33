"""One command at a time on what a results folder holds besides its run records (a comparison's spec, page,
claims and studies): an advisory lock (``flock``) on ``FOLDER/.flx.lock``, released when the command ends, however
it ends (the system drops it with the process). Run records need no such lock: concurrent sweeps share a store."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from flx.errors import StoreError

LOCK_FILE = ".flx.lock"


@contextlib.contextmanager
def hold(folder: str | Path, command: str):
    """Hold ``folder`` for ``command`` ("flx compare"); StoreError (one line) when another command holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, nothing held
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another command"
            raise StoreError(
                f"{folder} is in use by {holder}; wait for it to finish, or give another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command} (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
