"""Uncertainty maps, per-case summaries and the suggestion ranking, against hand-computed values."""
import numpy as np
import pytest

from nnunetv2_micd.inference.suggest import rank_cases
from nnunetv2_micd.inference.uncertainty import BAND_VOXELS, branch_disagreement, case_summary, normalised_entropy


def test_entropy_is_zero_for_a_certain_voxel_and_one_for_a_uniform_one():
    probabilities = np.array([[1.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.0]])  # classes x voxels
    assert normalised_entropy(probabilities) == pytest.approx([0.0, 1.0, np.log(2) / np.log(3)], abs=1e-6)


def test_disagreement_is_the_probability_mass_the_branches_place_apart():
    a = np.array([[1.0, 0.5, 0.2], [0.0, 0.5, 0.8]])
    b = np.array([[0.0, 0.5, 0.6], [1.0, 0.5, 0.4]])
    assert branch_disagreement(a, b) == pytest.approx([1.0, 0.0, 0.4])


def test_the_summary_measures_inside_and_around_each_structure_and_scores_the_foreground_region():
    segmentation = np.zeros((1, 12, 12), dtype=np.uint8)
    segmentation[0, 4:6, 4:6] = 1  # 4 voxels of class 1, nothing of class 2
    disagreement = np.zeros(segmentation.shape, dtype=np.float32)
    disagreement[0, 4, 4] = 1.0  # inside
    disagreement[0, 3, 4] = 0.6  # in the band around it
    disagreement[0, 0, 0] = 1.0  # far away: in no region
    entropy = np.full(segmentation.shape, 0.2, dtype=np.float32)
    summary = case_summary(segmentation, {"disagreement": disagreement, "entropy": entropy}, {"a": 1, "b": 2}, 2.0)
    one = summary["classes"]["a"]
    assert one["volume_voxels"] == 4 and one["volume_mm3"] == 8.0
    assert one["disagreement_inside"] == pytest.approx(0.25)
    assert BAND_VOXELS == 2  # a 2 x 2 square grown twice with the 4-neighbour cross: 24 voxels, 20 around it
    assert one["disagreement_around"] == pytest.approx(0.6 / 20)
    assert one["uncertain_voxels_disagreement"] == 2 and one["uncertain_voxels_entropy"] == 0
    assert summary["classes"]["b"]["volume_voxels"] == 0 and summary["classes"]["b"]["disagreement_inside"] is None
    assert summary["score_map"] == "disagreement"
    assert summary["score"] == pytest.approx(1.6 / 24)  # the far voxel is outside the scored region
    assert summary["mean_entropy"] == pytest.approx(0.2)


def _case(score, histogram):
    return {"score": score, "mean_entropy": score / 2, "image_histogram": histogram}


def test_the_ranking_is_by_score_with_ties_broken_by_case_id():
    cases = {"c": _case(0.2, [1, 0]), "a": _case(0.5, [1, 0]), "b": _case(0.2, [0, 1])}
    ranking = rank_cases(cases)
    assert [entry["case"] for entry in ranking] == ["a", "b", "c"]
    assert [entry["rank"] for entry in ranking] == [1, 2, 3]
    assert ranking[0]["mean_entropy"] == 0.25 and ranking[0]["distance_to_earlier_picks"] is None


def test_diversity_lets_a_dissimilar_scan_go_before_a_near_duplicate_of_a_pick():
    cases = {"top": _case(1.0, [1.0, 0.0]), "twin": _case(0.9, [0.99, 0.01]), "other": _case(0.5, [0.0, 1.0]),
             "low": _case(0.0, [0.5, 0.5])}
    assert [e["case"] for e in rank_cases(cases)][:2] == ["top", "twin"]
    diverse = [e["case"] for e in rank_cases(cases, diversity=1.0)]
    assert diverse[:2] == ["top", "other"] and sorted(diverse) == sorted(cases)


def test_auroc_counts_ties_half_and_the_check_finds_a_score_that_tracks_dice():
    from nnunetv2_micd.evaluation.uncertainty_quality import auroc, score_quality
    assert auroc(np.array([3.0, 1.0, 2.0, 2.0]), np.array([True, False, True, False])) == pytest.approx(0.875)
    dice = {f"c{i}": 0.9 - 0.1 * i for i in range(8)}  # c7 and c6 are the worst quarter
    cases = {f"c{i}": {"score": 0.1 * i, "score_map": "disagreement", "foreground_voxels": 100, "mean_entropy": 0.5}
             for i in range(8)}
    result = score_quality(cases, dice)
    assert result["per_case"]["c7"] == {"score": pytest.approx(0.7), "dice": pytest.approx(0.2)}
    assert sorted(result["worst_quarter"]) == ["c6", "c7"]
    assert result["scores"]["score"]["spearman_rho_with_dice"] == pytest.approx(-1.0)
    assert result["scores"]["score"]["auroc_worst_quarter"] == 1.0
    assert result["scores"]["negative predicted volume"]["auroc_worst_quarter"] == 0.5  # all equal: chance


def test_the_score_picture_is_drawn_from_the_check_alone(tmp_path):
    from nnunetv2_micd.evaluation.uncertainty_quality import plot_score_against_dice, score_quality
    cases = {f"c{i}": {"score": 0.1 * i, "score_map": "disagreement", "foreground_voxels": 100} for i in range(4)}
    result = score_quality(cases, {f"c{i}": 0.9 - 0.1 * i for i in range(4)})
    plot_score_against_dice(result, str(tmp_path / "score.png"))
    assert (tmp_path / "score.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_summaries_name_the_segmented_structures_only():
    from nnunetv2_micd.evaluation.classes import foreground_classes
    labels = {"background": 0, "RV": 1, "Myo": 2, "ignore": 3}
    assert foreground_classes({"labels": labels}) == {"RV": 1, "Myo": 2}


def test_cases_labeled_together_are_ranked_as_one_by_their_mean_score():
    from nnunetv2_micd.inference.suggest import group_cases
    cases = {"patient001_frame01": _case(0.9, [1, 0]), "patient001_frame02": _case(0.1, [0, 1]),
             "patient002_frame01": _case(0.6, [1, 0]), "patient002_frame02": _case(0.6, [1, 0])}
    groups = group_cases(cases, r"patient\d+")
    assert groups["patient001"]["cases"] == "patient001_frame01 patient001_frame02"
    assert groups["patient001"]["score"] == pytest.approx(0.5) and groups["patient001"]["mean_entropy"] == \
        pytest.approx(0.25)
    ranking = rank_cases(groups)
    assert [entry["case"] for entry in ranking] == ["patient002", "patient001"]  # one bad frame is not the mean
    assert ranking[0]["cases"] == "patient002_frame01 patient002_frame02"
    with pytest.raises(ValueError, match="case other does not match the group pattern"):
        group_cases({**cases, "other": _case(0.1, [1, 0])}, r"patient\d+")
