"""Running a classifier: inputs made float (images are stored as uint8) and scored in batches."""

from __future__ import annotations

import torch


def prepare_inputs(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in about [-2, 2]; feature vectors as they are."""
    return x.float().div_(255).sub_(0.5).div_(0.25) if x.dtype == torch.uint8 else x


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters(), torch.zeros(0)).device


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits for every row of ``x``, in eval mode, on the model's device; returned on the CPU."""
    model.eval()
    device = _device_of(model)
    return torch.cat(
        [
            model(prepare_inputs(x[i : i + batch_size].to(device))).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    )
