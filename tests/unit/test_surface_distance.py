"""Surface distances against hand-computed values and a brute-force reference."""
import numpy as np
import pytest

from nnunetv2_micd.evaluation.surface_distance import surface, surface_distances, surface_metrics


def _ball(shape, center, radius):
    grid = np.indices(shape).astype(float)
    return ((grid - np.array(center)[:, None, None, None]) ** 2).sum(0) <= radius ** 2


def _brute_force(prediction, reference, spacing):
    """Every pair of surface voxels: the definition, without distance transforms."""
    a = np.argwhere(surface(prediction)) * spacing
    b = np.argwhere(surface(reference)) * spacing
    pairwise = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    return pairwise.min(1), pairwise.min(0)


def test_identical_masks_are_zero_apart():
    ball = _ball((20, 20, 20), (10, 10, 10), 5)
    assert surface_metrics(ball, ball, (1, 1, 1)) == {"ASD": 0, "HD95": 0}


def test_two_voxels_three_apart_with_anisotropic_spacing():
    a, b = np.zeros((8, 8, 8), bool), np.zeros((8, 8, 8), bool)
    a[1, 4, 4], b[4, 4, 4] = True, True
    # 3 voxels along the first axis, 2 mm each
    assert surface_metrics(a, b, (2.0, 0.5, 0.5)) == {"ASD": pytest.approx(6.0), "HD95": pytest.approx(6.0)}


def test_cube_against_a_shifted_cube_along_one_axis():
    a, b = np.zeros((12, 12, 12), bool), np.zeros((12, 12, 12), bool)
    a[2:6, 2:6, 2:6] = True
    b[4:8, 2:6, 2:6] = True
    forward, backward = surface_distances(a, b, (1, 1, 1))
    # 4x4x4 cube: 56 surface voxels; shifted by 2, the 16 voxels of the far face are 2 away, the rest touch the
    # other surface or lie on it
    assert len(forward) == len(backward) == 56
    assert sorted(set(forward.round(6))) == [0.0, 1.0, 2.0]
    assert (forward == 2).sum() == 16 and (forward == 1).sum() == 16


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
def test_sphere_against_a_shifted_sphere_matches_brute_force(spacing):
    prediction = _ball((24, 22, 20), (11, 10, 9), 6)
    reference = _ball((24, 22, 20), (13, 10, 10), 5)
    forward, backward = surface_distances(prediction, reference, spacing)
    expected_forward, expected_backward = _brute_force(prediction, reference, np.array(spacing))
    np.testing.assert_allclose(np.sort(forward), np.sort(expected_forward))
    np.testing.assert_allclose(np.sort(backward), np.sort(expected_backward))
    both = np.concatenate((expected_forward, expected_backward))
    metrics = surface_metrics(prediction, reference, spacing)
    assert metrics["ASD"] == pytest.approx(both.mean())
    assert metrics["HD95"] == pytest.approx(max(np.percentile(expected_forward, 95),
                                                np.percentile(expected_backward, 95)))


def test_masks_touching_the_image_border_keep_their_border_surface():
    a = np.zeros((6, 6, 6), bool)
    a[:3] = True  # a slab against the border: the border face is surface too
    assert surface(a)[0].all()


def test_empty_masks_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool), (1, 1, 1))


def test_a_2d_image_as_nnunet_reads_it_measures_between_contours():
    grid = np.indices((30, 30)).astype(float)
    prediction = ((grid - np.array([14, 14])[:, None, None]) ** 2).sum(0) <= 8 ** 2
    reference = ((grid - np.array([15, 14])[:, None, None]) ** 2).sum(0) <= 5 ** 2
    spacing = (0.7, 0.9)
    expected_forward, expected_backward = surface_distances(prediction, reference, spacing)
    # nnU-Net's readers give a 2D segmentation as (1, y, x), with a placeholder spacing for the first axis
    forward, backward = surface_distances(prediction[None], reference[None], (999.0, *spacing))
    np.testing.assert_allclose(np.sort(forward), np.sort(expected_forward))
    np.testing.assert_allclose(np.sort(backward), np.sort(expected_backward))
    assert forward.min() > 0  # the smaller disk lies inside the larger one: no contour voxel is shared
