import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from nnunetv2_micd.method.config import ConfigError, MICDConfig, TrainingBudget


def test_defaults_are_valid_and_round_trip():
    config = MICDConfig()
    assert MICDConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("values, message", [
    ({"lambda_max": -1}, "lambda_max must be >= 0"),
    ({"ema_decay": 1.5}, r"ema_decay must be in \[0, 1\]"),
    ({"inference_mode": "best"}, "inference_mode must be one of"),
    ({"mask_block_size": [4, 0, 4]}, "mask_block_size must be null or a list of positive integers"),
    ({"unlabeled_batch_size": 0}, "unlabeled_batch_size must be null or a positive integer"),
    ({"lambda": 1}, r"unknown MICDConfig key\(s\) \['lambda'\]"),
    # JSON of the wrong type is named, not compared into a TypeError
    ({"lambda_max": "0.1"}, "lambda_max must be a number, got '0.1'"),
    ({"ema_decay": None}, "ema_decay must be a number, got None"),
    ({"weight_cmd": True}, "weight_cmd must be a number, got True"),
    ({"cmd_mode": 1}, "cmd_mode must be a string, got 1"),
    ({"unlabeled_batch_size": True}, "unlabeled_batch_size must be null or a positive integer, got True"),
    ({"mask_block_size": [4, True, 4]}, "mask_block_size must be null or a list of positive integers"),
    ({"confidence_threshold": 1.2}, r"confidence_threshold must be in \[0, 1\]"),
    ({"cfc_standardise": 1}, "cfc_standardise must be true or false, got 1"),
    ({"threshold_background_only": True, "confidence_threshold": 0.0},
     "threshold_background_only needs a confidence_threshold above 0"),
    ({"learned_class_dice": -0.1}, r"learned_class_dice must be in \[0, 1\]"),
    ({"branch_b_init": "he"}, "branch_b_init must be one of"),
    ({"class_weighting": "dhc_exact"}, r"class_weighting must be one of \('dhc', 'dhc_published', 'none'\)"),
])
def test_bad_values_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        MICDConfig.from_dict(values)


def test_file_in_environment_overrides_defaults(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lambda_max": 0.5, "mask_block_size": [8, 8, 8]}))
    monkeypatch.setenv("MICD_CONFIG", str(path))
    config = MICDConfig.from_environment()
    assert config.lambda_max == 0.5 and config.mask_block_size == (8, 8, 8) and config.ema_decay == 0.99


def test_a_variant_fixed_field_cannot_be_changed_by_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"weight_mcpc": 1.0}))
    monkeypatch.setenv("MICD_CONFIG", str(path))
    with pytest.raises(ConfigError, match="which this trainer fixes"):
        MICDConfig.from_environment(weight_mcpc=0.0)
    monkeypatch.delenv("MICD_CONFIG")
    assert MICDConfig.from_environment(weight_mcpc=0.0).weight_mcpc == 0.0


def test_budget_from_environment(monkeypatch):
    for key in ("MICD_NUM_EPOCHS", "MICD_ITERS_PER_EPOCH", "MICD_VAL_ITERS", "MICD_SAVE_EVERY", "MICD_SEED",
                "MICD_FINAL_VALIDATION"):
        monkeypatch.delenv(key, raising=False)
    assert TrainingBudget.from_environment() == TrainingBudget()
    monkeypatch.setenv("MICD_NUM_EPOCHS", "3")
    monkeypatch.setenv("MICD_ITERS_PER_EPOCH", "7")
    monkeypatch.setenv("MICD_SEED", "0")
    budget = TrainingBudget.from_environment()
    assert (budget.num_epochs, budget.total_steps, budget.seed) == (3, 21, 0)
    assert budget.final_validation
    monkeypatch.setenv("MICD_FINAL_VALIDATION", "0")
    assert not TrainingBudget.from_environment().final_validation
    monkeypatch.setenv("MICD_FINAL_VALIDATION", "no")
    with pytest.raises(ConfigError, match="MICD_FINAL_VALIDATION must be 0 or 1"):
        TrainingBudget.from_environment()
    monkeypatch.setenv("MICD_FINAL_VALIDATION", "1")
    monkeypatch.setenv("MICD_VAL_ITERS", "many")
    with pytest.raises(ConfigError, match="MICD_VAL_ITERS must be an integer"):
        TrainingBudget.from_environment()


def test_a_budget_written_to_the_environment_is_the_budget_the_trainers_read(monkeypatch):
    budget = TrainingBudget(num_epochs=7, iterations_per_epoch=3, val_iterations=2, save_every=4, seed=5,
                            final_validation=False)
    for variable, value in budget.to_environment().items():
        monkeypatch.setenv(variable, value)
    assert TrainingBudget.from_environment() == budget
    assert "MICD_SEED" not in TrainingBudget().to_environment()  # no seed: nnU-Net's own randomness


def test_every_micd_setting_is_documented_with_its_default():
    table = Path(__file__).parents[2].joinpath("docs", "configuration.md").read_text()
    rows = dict(re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|", table, flags=re.M))
    documented = {name.strip("` "): default.strip() for keys, default in rows.items() for name in keys.split(",")}
    for field in fields(MICDConfig):
        assert field.name in documented, f"{field.name} is missing from docs/configuration.md"
        assert documented[field.name].strip("`") == json.dumps(field.default), field.name
