"""Random block masking of input patches (2D or 3D).

Masking whole blocks instead of single voxels removes local context, so the network has to infer the hidden
structure from what is left. That is what makes the masked prediction a useful consistency target.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch


def default_block_size(patch_size: Sequence[int], fraction: float = 1 / 8, minimum: int = 4) -> Tuple[int, ...]:
    """Block edge per axis: a fixed fraction of the patch, at least `minimum`, never larger than the axis."""
    if fraction <= 0:
        raise ValueError(f"fraction must be > 0, got {fraction}")
    if minimum < 1:
        raise ValueError(f"minimum must be >= 1, got {minimum}")
    if any(p < 1 for p in patch_size):
        raise ValueError(f"patch_size entries must be >= 1, got {tuple(patch_size)}")
    return tuple(min(int(p), max(minimum, round(p * fraction))) for p in patch_size)


def random_block_mask(batch_size: int,
                      spatial_shape: Sequence[int],
                      block_size: Sequence[int],
                      mask_ratio: float,
                      device: Optional[Union[torch.device, str]] = None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Float mask of shape (B, 1, *spatial_shape), 1 = keep, 0 = masked.

    The patch is tiled into blocks (the last block on an axis is cropped where the block size does not divide the
    axis). Every sample gets its own random selection of exactly round(mask_ratio * n_blocks) masked blocks, so the
    masked fraction does not fluctuate between samples. A `generator` must live on `device`.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    block_size = tuple(int(b) for b in block_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(spatial_shape) != len(block_size):
        raise ValueError(f"spatial_shape {spatial_shape} and block_size {block_size} must have the same length")
    if any(s < 1 for s in spatial_shape) or any(b < 1 for b in block_size):
        raise ValueError(f"spatial_shape {spatial_shape} and block_size {block_size} must be positive")
    if not 0 <= mask_ratio <= 1:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")

    grid_shape = tuple(math.ceil(s / b) for s, b in zip(spatial_shape, block_size))
    n_blocks = math.prod(grid_shape)
    n_masked = round(mask_ratio * n_blocks)

    # sorting i.i.d. uniform scores gives an independent random permutation of the blocks per sample
    scores = torch.rand((batch_size, n_blocks), device=device, generator=generator)
    masked_blocks = scores.argsort(dim=1)[:, :n_masked]
    grid = torch.ones((batch_size, n_blocks), device=scores.device)
    grid.scatter_(1, masked_blocks, 0.)
    mask = grid.view(batch_size, 1, *grid_shape)

    for axis, (size, block) in enumerate(zip(spatial_shape, block_size), start=2):
        mask = mask.repeat_interleave(block, dim=axis).narrow(axis, 0, size)
    return mask.contiguous()


def apply_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked voxels of all channels; `mask` is (B, 1, *spatial) and broadcasts over channels."""
    return images * mask
