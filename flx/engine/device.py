"""Where a run trains: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` resolved and checked."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda, mps or cpu (what torch finds); others checked: DeviceError (one line) when torch
    finds no such device here."""
    from flx.errors import ConfigError

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ConfigError(
                f"--device got {device!r}, but torch finds {count} CUDA device(s) here; accepted: "
                + (
                    f"cuda or cuda:0 to cuda:{count - 1}"
                    if count
                    else "cpu or auto (this machine has no CUDA GPU)"
                )
            )
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("--device got 'mps', but torch finds no MPS device here; accepted: cpu or auto")
    return device
