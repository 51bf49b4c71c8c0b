"""The literature's metrics (medpy's definitions, SSL4MIS/BCP/ABD conventions) on hand-checkable masks."""
import numpy as np
import pytest

from nnunetv2_micd.evaluation.evaluate import format_literature_table
from nnunetv2_micd.evaluation.literature_metrics import literature_metrics, literature_record, summarize
from nnunetv2_micd.evaluation.surface_distance import surface_metrics


def _squares_two_rows_apart():
    """6x6 squares, the prediction's rows 2-7 and the reference's rows 4-9, in the same columns 2-7."""
    prediction, reference = np.zeros((12, 10), bool), np.zeros((12, 10), bool)
    prediction[2:8, 2:8] = True
    reference[4:10, 2:8] = True
    return prediction, reference


def test_squares_offset_by_k_voxels():
    prediction, reference = _squares_two_rows_apart()
    metrics = literature_metrics(prediction, reference)
    # side n = 6, offset k = 2: Dice (n - k) / n, Jaccard (n - k) / (n + k)
    assert metrics["Dice"] == pytest.approx(4 / 6) and metrics["Jaccard"] == pytest.approx(4 / 8)
    # the prediction's 20 contour pixels to the reference's contour: top row 6 x 2, bottom row 0 1 2 2 1 0 (inside
    # the reference, nearest its sides), side columns 1 0 0 0 twice (row 3 is one above the reference's top row)
    assert metrics["ASD"] == pytest.approx(20 / 20)
    # pooled with the mirror-image direction: 16 zeros, 8 ones and 16 twos; the 95th percentile is k
    assert metrics["HD95"] == pytest.approx(2.0)


def test_a_stray_bit_of_reference_shows_one_directional_asd_and_pooled_hd95():
    prediction = np.zeros((20, 20), bool)
    prediction[2:12, 2:12] = True  # 10x10 square: 36 contour pixels
    reference = prediction.copy()
    reference[16, 5:8] = True  # a 1x3 bar five rows below the square
    metrics = literature_metrics(prediction, reference)
    assert metrics["Dice"] == pytest.approx(200 / 203) and metrics["Jaccard"] == pytest.approx(100 / 103)
    # prediction to reference: 36 zeros; the bar lies only in the other direction
    assert metrics["ASD"] == 0
    assert literature_metrics(reference, prediction)["ASD"] == pytest.approx(3 * 5 / 39)
    # pooled, the bar is 3 of 75 distances (under 5 %): HD95 0; alone, the other direction's 95th percentile is 5
    assert metrics["HD95"] == 0
    symmetric = surface_metrics(prediction, reference, (1.0, 1.0))
    assert symmetric["ASD"] == pytest.approx(3 * 5 / 75) and symmetric["HD95"] == pytest.approx(5.0)


@pytest.mark.parametrize("reference_holds_the_class", [True, False])
def test_an_empty_prediction_scores_zero_on_all_four(reference_holds_the_class):
    prediction, reference = np.zeros((8, 8, 8), bool), np.zeros((8, 8, 8), bool)
    reference[2:5, 2:5, 2:5] = reference_holds_the_class
    assert literature_metrics(prediction, reference) == {"Dice": 0, "Jaccard": 0, "HD95": 0, "ASD": 0}
    assert literature_record(prediction, reference)["empty_prediction"]


def test_a_class_predicted_but_absent_from_the_reference_has_no_distances():
    prediction, reference = np.zeros((8, 8, 8), bool), np.zeros((8, 8, 8), bool)
    prediction[2:5, 2:5, 2:5] = True
    record = literature_record(prediction, reference)
    assert record == {"Dice": 0, "Jaccard": 0, "HD95": None, "ASD": None, "empty_prediction": False,
                      "empty_reference": True}


def test_spacing_matters_only_when_given():
    prediction, reference = _squares_two_rows_apart()
    in_voxels = literature_metrics(prediction, reference)
    assert literature_metrics(prediction, reference, (1.0, 1.0)) == in_voxels
    in_mm = literature_metrics(prediction, reference, (3.0, 0.5))
    assert in_mm["Dice"] == in_voxels["Dice"] and in_mm["Jaccard"] == in_voxels["Jaccard"]
    # rows 3 mm, columns 0.5 mm apart: top row 6 x 6 mm, bottom row 0 0.5 1 1 0.5 0, side columns 3 0 0 0 twice
    assert in_mm["ASD"] == pytest.approx(45 / 20)
    assert in_mm["HD95"] == pytest.approx(6.0)  # both squares' top (bottom) rows: 12 of 40 distances are 6 mm


def _case(**metrics_per_label):
    return {"metrics": metrics_per_label}


def test_means_over_volumes_count_the_zeros_of_missed_classes_then_average_the_classes():
    found = {"Dice": 0.8, "Jaccard": 0.6, "HD95": 4.0, "ASD": 1.0, "empty_prediction": False, "empty_reference": False}
    missed = {"Dice": 0, "Jaccard": 0, "HD95": 0, "ASD": 0, "empty_prediction": True, "empty_reference": False}
    hallucinated = {"Dice": 0, "Jaccard": 0, "HD95": None, "ASD": None, "empty_prediction": False,
                    "empty_reference": True}
    summary = summarize([_case(**{"1": found, "2": found}), _case(**{"1": missed, "2": hallucinated})],
                        ["1", "2"], "voxels")
    assert summary["mean"]["1"] == {"Dice": 0.4, "Jaccard": 0.3, "HD95": 2.0, "ASD": 0.5, "n_empty_prediction": 1,
                                    "n_empty_reference": 0}
    assert summary["mean"]["2"] == {"Dice": 0.4, "Jaccard": 0.3, "HD95": 4.0, "ASD": 1.0, "n_empty_prediction": 0,
                                    "n_empty_reference": 1}
    assert summary["foreground_mean"] == {"Dice": 0.4, "Jaccard": 0.3, "HD95": 3.0, "ASD": 0.75}
    lines = format_literature_table(summary, {"1": "RV", "2": "LV"})
    assert lines[1] == "distances in voxels (= mm at the 1 mm spacing of the ACDC h5 import)"
    assert lines[3].split() == ["RV", "0.400", "0.300", "2.000", "0.500", "1"]
    assert lines[-1].split() == ["mean", "0.400", "0.300", "3.000", "0.750"]
