"""Pictures between numpy and torch: the one place that knows the layouts and value ranges.

Library pictures are ``numpy.float32`` ``H x W x 3`` RGB in [0, 1] (``uint8`` is accepted and
scaled). Generators take and give ``N x 3 x H x W`` tensors in [-1, 1] (the authors'
convention); the non-local sampler compares patches in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch


def pixels_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` float [0, 1] or uint8 -> ``1 x 3 x H x W`` float32 in [0, 1].

    A view of ``rgb`` when it is already contiguous float32 (channels-last strides): do not
    write into it.
    """
    array = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return tensor.permute(2, 0, 1).unsqueeze(0)


def to_model_range(rgb: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` float [0, 1] or uint8 -> ``1 x 3 x H x W`` float32 in [-1, 1] (new memory)."""
    return pixels_to_tensor(rgb).mul(2.0).sub(1.0)


def tensor_to_pixels(tensor: torch.Tensor) -> np.ndarray:
    """``1 x 3 x H x W`` or ``3 x H x W`` (any dtype, any device) -> ``H x W x 3`` float32."""
    image = tensor[0] if tensor.dim() == 4 else tensor
    return image.float().permute(1, 2, 0).cpu().numpy().astype(np.float32, copy=False)


def from_model_range(tensor: torch.Tensor) -> np.ndarray:
    """A generator's output in [-1, 1] -> ``H x W x 3`` float32 in [0, 1], clipped."""
    return tensor_to_pixels(tensor.float().add(1.0).mul(0.5).clamp_(0.0, 1.0))
