from nnunetv2_micd.plotting import grouped_bars, labels_would_overlap


def test_short_names_stay_level_and_long_or_many_are_slanted():
    assert not labels_would_overlap(["large", "medium", "small"])
    assert not labels_would_overlap(["nnUNetTrainerBudget\n6 labeled", "nnUNetTrainerMICD\n6 labeled"])
    assert labels_would_overlap([f"nnUNetTrainerMICD__{tag}\n6 labeled"
                                 for tag in ("branch-b-nnunet-init", "learned-classes0.5", "confident0.9")])
    assert labels_would_overlap([f"m{i}" for i in range(5)])


def test_grouped_bars_writes_the_chart(tmp_path):
    filename = str(tmp_path / "bars.png")
    grouped_bars(filename, ["a", "b"], {"RV": [0.6, 0.7], "LV": [0.8, 0.9]}, zoom=True)
    with open(filename, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
