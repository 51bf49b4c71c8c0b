import itertools

import pytest
import torch

from nnunetv2_micd.method.masking import apply_mask, default_block_size, random_block_mask


def _blocks(mask: torch.Tensor, block_size):
    """Yield the (cropped) block views of one sample's mask (1, *spatial)."""
    spatial = mask.shape[1:]
    starts = [range(0, s, b) for s, b in zip(spatial, block_size)]
    for corner in itertools.product(*starts):
        index = (slice(None),) + tuple(slice(c, c + b) for c, b in zip(corner, block_size))
        yield mask[index]


def test_default_block_size_values():
    # 128 / 8 = 16; 40 / 8 = 5; 20 / 8 = 2.5 -> raised to the minimum 4; axis 3 caps the block at 3
    assert default_block_size((128, 128, 128)) == (16, 16, 16)
    assert default_block_size((40, 20, 3)) == (5, 4, 3)
    assert default_block_size((64, 64), fraction=0.25, minimum=2) == (16, 16)
    assert default_block_size((10,), fraction=0.1, minimum=1) == (1,)


@pytest.mark.parametrize("kwargs", [dict(fraction=0), dict(minimum=0)])
def test_default_block_size_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        default_block_size((32, 32), **kwargs)
    with pytest.raises(ValueError):
        default_block_size((32, 0))


@pytest.mark.parametrize("spatial, block, ratio, n_masked_blocks", [
    ((8, 8), (2, 2), 0.25, 4),  # 4 x 4 = 16 blocks, 0.25 * 16 = 4
    ((7, 5), (3, 2), 0.3, 3),  # 3 x 3 = 9 blocks, last row and column cropped, round(0.3 * 9 = 2.7) = 3
    ((4, 6, 5), (2, 3, 2), 0.5, 6),  # 2 x 2 x 3 = 12 blocks, last z block cropped to 1, 0.5 * 12 = 6
])
def test_exact_number_of_constant_masked_blocks_per_sample(spatial, block, ratio, n_masked_blocks):
    generator = torch.Generator().manual_seed(0)
    mask = random_block_mask(3, spatial, block, ratio, generator=generator)

    assert mask.shape == (3, 1, *spatial)
    assert mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    for sample in mask:
        blocks = list(_blocks(sample, block))
        assert all(b.min() == b.max() for b in blocks)
        assert sum(int(b.flatten()[0] == 0) for b in blocks) == n_masked_blocks


def test_masked_voxel_count_when_blocks_divide_the_patch():
    # 16 blocks of 2 x 2 voxels, 4 of them masked -> 16 of 64 voxels are 0 in every sample
    mask = random_block_mask(5, (8, 8), (2, 2), 0.25, generator=torch.Generator().manual_seed(1))
    assert (mask == 0).flatten(1).sum(1).tolist() == [16] * 5


def test_masks_differ_between_samples_and_are_reproducible():
    first = random_block_mask(8, (16, 16, 16), (4, 4, 4), 0.5, generator=torch.Generator().manual_seed(2))
    second = random_block_mask(8, (16, 16, 16), (4, 4, 4), 0.5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, second)
    assert any(not torch.equal(first[0], first[i]) for i in range(1, 8))


@pytest.mark.parametrize("spatial", [(6, 6), (6, 6, 6)])
def test_ratio_end_points(spatial):
    block = (2,) * len(spatial)
    assert torch.all(random_block_mask(2, spatial, block, 0.0) == 1)
    assert torch.all(random_block_mask(2, spatial, block, 1.0) == 0)


@pytest.mark.parametrize("args", [
    (0, (8, 8), (2, 2), 0.5),  # empty batch
    (1, (8, 8), (2, 2, 2), 0.5),  # dimensionality mismatch
    (1, (8, 8), (0, 2), 0.5),  # zero block size
    (1, (8, 8), (2, 2), 1.5),  # ratio above 1
    (1, (8, 8), (2, 2), -0.1),  # ratio below 0
])
def test_random_block_mask_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        random_block_mask(*args)


@pytest.mark.parametrize("spatial", [(2, 2), (2, 2, 1)])
def test_apply_mask_zeroes_all_channels_of_masked_voxels(spatial):
    images = torch.arange(1, 9, dtype=torch.float32).view(1, 2, *spatial)
    # channel 0 holds 1..4, channel 1 holds 5..8; masking voxels 0 and 3 keeps 2, 3 and 6, 7
    mask = torch.tensor([0., 1., 1., 0.]).view(1, 1, *spatial)
    expected = torch.tensor([0., 2., 3., 0., 0., 6., 7., 0.]).view(1, 2, *spatial)
    assert torch.equal(apply_mask(images, mask), expected)
