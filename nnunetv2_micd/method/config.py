"""Every hyper-parameter of MICD in one place, and the training budget shared with the baseline trainer.

``nnUNetv2_train`` takes no extra flags, so both are changed through the environment:

- ``MICD_CONFIG=path/to/config.json`` overrides any field of the trainer's configuration (:class:`MICDConfig`,
  :class:`MeanTeacherConfig`; unknown keys or bad values stop training before it starts);
- ``MICD_NUM_EPOCHS``, ``MICD_ITERS_PER_EPOCH``, ``MICD_VAL_ITERS``, ``MICD_SAVE_EVERY``, ``MICD_SEED`` and
  ``MICD_FINAL_VALIDATION`` set the :class:`TrainingBudget`.
"""
import json
import os
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from nnunetv2_micd.errors import MicdError

CLASS_WEIGHTING_MODES = ("dhc", "dhc_published", "none")
CMD_MODES = ("own", "cross")
BRANCH_B_INITS = ("pytorch", "nnunet")
INFERENCE_MODES = ("ensemble", "student_a", "teachers")


class ConfigError(MicdError, ValueError):
    """A configuration that must not start a training."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is not a weight


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


#: what a field of each annotated type must hold
FIELD_TYPES = {float: ("a number", _is_number), str: ("a string", lambda value: isinstance(value, str)),
               bool: ("true or false", lambda value: isinstance(value, bool))}


@dataclass(frozen=True)
class SemiSupervisedConfig:
    """What every semi-supervised trainer of this package shares, so that methods compare at equal settings."""
    #: λ_max, the weight of the unsupervised terms after ramp-up (DHC used 0.1)
    lambda_max: float = 0.1
    #: ramp-up length T as a fraction of all optimizer steps of the training
    rampup_fraction: float = 0.4
    #: EMA decay α of the teachers
    ema_decay: float = 0.99
    #: unlabeled patches per step; None = the plans' batch size
    unlabeled_batch_size: Optional[int] = None
    #: fields added after runs were recorded, with the value those runs trained with (they had no such setting)
    FIELDS_ADDED_LATER: ClassVar[Dict[str, object]] = {}

    def __post_init__(self):
        problems = self.type_problems() or self.problems()
        if problems:
            raise ConfigError(f"invalid {self.__class__.__name__}: " + "; ".join(problems))

    def type_problems(self) -> List[str]:
        """Numbers and names given as another JSON type (the value checks of :meth:`problems` need the types)."""
        return [f"{f.name} must be {FIELD_TYPES[f.type][0]}, got {getattr(self, f.name)!r}" for f in fields(self)
                if f.type in FIELD_TYPES and not FIELD_TYPES[f.type][1](getattr(self, f.name))]

    def problems(self) -> List[str]:
        problems = [] if self.lambda_max >= 0 else [f"lambda_max must be >= 0, got {self.lambda_max}"]
        problems += _fraction_problems(self, ("rampup_fraction", "ema_decay"))
        if self.unlabeled_batch_size is not None and not _is_positive_int(self.unlabeled_batch_size):
            problems.append(f"unlabeled_batch_size must be null or a positive integer, "
                            f"got {self.unlabeled_batch_size!r}")
        return problems

    @classmethod
    def from_dict(cls, values: dict) -> "SemiSupervisedConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; known keys: {sorted(known)}")
        if isinstance(values.get("mask_block_size"), list):
            values = {**values, "mask_block_size": tuple(values["mask_block_size"])}
        return cls(**values)

    @classmethod
    def from_environment(cls, **fixed) -> "SemiSupervisedConfig":
        """Defaults, updated by the JSON file in MICD_CONFIG; ``fixed`` are the fields a trainer variant sets,
        which the file may not change."""
        path = os.environ.get("MICD_CONFIG")
        values = _read_config_file(path, f"MICD_CONFIG={path}") if path else {}
        return cls.with_fixed_fields(values, f"MICD_CONFIG={path}", **fixed)

    @classmethod
    def from_file(cls, path: str) -> "SemiSupervisedConfig":
        """Defaults, updated by a JSON file written for MICD_CONFIG."""
        return cls.with_fixed_fields(_read_config_file(path, path), path)

    @classmethod
    def with_fixed_fields(cls, values: dict, source: str, **fixed) -> "SemiSupervisedConfig":
        """Defaults, updated by ``values`` (read from ``source``) and by the fields a trainer variant fixes."""
        conflicts = sorted(k for k in fixed if k in values and values[k] != fixed[k])
        if conflicts:
            raise ConfigError(f"{source} sets {conflicts}, which this trainer fixes to "
                              f"{ {k: fixed[k] for k in conflicts} }")
        return cls.from_dict({**values, **fixed})

    @classmethod
    def as_recorded(cls, recorded: dict) -> dict:
        """A configuration recorded by an earlier version, with the fields added since as that run trained."""
        return {**cls.FIELDS_ADDED_LATER, **recorded}

    def term_weights(self) -> Dict[str, float]:
        """The method's unsupervised terms, each by the name it is logged under (``loss_<name>``), with its weight
        relative to the others; a term of weight 0 is switched off. The trainer weights them all by λ(t)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        values = asdict(self)
        if values.get("mask_block_size") is not None:
            values["mask_block_size"] = list(values["mask_block_size"])
        return values


def _read_config_file(path: str, source: str) -> dict:
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{source} cannot be read: {e}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{source} must hold a JSON object")
    return values


def _fraction_problems(config, names: Sequence[str]) -> List[str]:
    return [f"{name} must be in [0, 1], got {getattr(config, name)}" for name in names
            if not 0 <= getattr(config, name) <= 1]


@dataclass(frozen=True)
class MeanTeacherConfig(SemiSupervisedConfig):
    #: standard deviation of the Gaussian noise added to the teacher's input (clipped at two deviations)
    input_noise: float = 0.1

    def problems(self) -> List[str]:
        problems = super().problems()
        return problems + ([] if self.input_noise >= 0 else [f"input_noise must be >= 0, got {self.input_noise}"])

    def term_weights(self) -> Dict[str, float]:
        return {"consistency": 1.0}


@dataclass(frozen=True)
class MICDConfig(SemiSupervisedConfig):
    #: relative weights of the three unsupervised terms
    weight_mcpc: float = 1.0
    weight_cfc: float = 1.0
    weight_cmd: float = 1.0
    #: fraction of blocks zeroed in the masked copies (0 disables masking: plain cross pseudo supervision)
    mask_ratio: float = 0.5
    #: block size per axis in voxels; None = patch size / 8, at least 4
    mask_block_size: Optional[Tuple[int, ...]] = None
    #: class weights in MCPC: DHC's, simplified ("dhc"), DHC's formulas as its code has them ("dhc_published"), or none
    class_weighting: str = "dhc"
    #: momentum of the per-class statistics (class weights, learned classes)
    class_weight_momentum: float = 0.99
    #: CMD: each student follows its own teacher ("own") or the other branch's teacher ("cross")
    cmd_mode: str = "own"
    #: MCPC and CMD learn only from pseudo-labels whose top class probability reaches this (0: from all, as the paper)
    confidence_threshold: float = 0.9
    #: the threshold leaves out only unconfident background pseudo-labels and keeps every structure's, so that the
    #: structures' borders keep teaching (false: every class, as the threshold was tuned)
    threshold_background_only: bool = False
    #: CFC compares each voxel's features standardised over the channels (false: the raw features, as the paper)
    cfc_standardise: bool = False
    #: branch B's initial weights: PyTorch's defaults (as the paper) or nnU-Net's, as branch A has
    branch_b_init: str = "pytorch"
    #: MCPC and CMD leave out of a student's softmax, where it is not the pseudo-label, each class whose running
    #: soft Dice on the labeled patches is below this for that student, so they cannot unlearn a class the labels
    #: are still teaching (0: every class always in, as the paper)
    learned_class_dice: float = 0.0
    FIELDS_ADDED_LATER: ClassVar[Dict[str, object]] = {"confidence_threshold": 0.0, "cfc_standardise": False,
                                                       "branch_b_init": "pytorch", "learned_class_dice": 0.0,
                                                       "threshold_background_only": False}
    #: prediction: average of both students' logits, student A alone, or the average of both teachers
    inference_mode: str = "ensemble"

    def problems(self) -> List[str]:
        problems = super().problems()
        problems += [f"{name} must be >= 0, got {getattr(self, name)}"
                     for name in ("weight_mcpc", "weight_cfc", "weight_cmd") if not getattr(self, name) >= 0]
        problems += _fraction_problems(self, ("mask_ratio", "class_weight_momentum", "confidence_threshold",
                                              "learned_class_dice"))
        for name, allowed in (("class_weighting", CLASS_WEIGHTING_MODES), ("cmd_mode", CMD_MODES),
                              ("inference_mode", INFERENCE_MODES), ("branch_b_init", BRANCH_B_INITS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.threshold_background_only and self.confidence_threshold == 0:
            problems.append("threshold_background_only needs a confidence_threshold above 0")
        if self.mask_block_size is not None and (
                not isinstance(self.mask_block_size, (tuple, list)) or
                not all(_is_positive_int(b) for b in self.mask_block_size)):
            problems.append(f"mask_block_size must be null or a list of positive integers, "
                            f"got {self.mask_block_size!r}")
        return problems

    def term_weights(self) -> Dict[str, float]:
        return {"mcpc": self.weight_mcpc, "cfc": self.weight_cfc, "cmd": self.weight_cmd}

    @property
    def uses_teachers(self) -> bool:
        return self.weight_cmd > 0 or self.inference_mode == "teachers"


def _int_from_environment(name: str, default: Optional[int], minimum: int = 1) -> Optional[int]:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _flag_from_environment(name: str, default: bool) -> bool:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    if text.lower() not in ("0", "1", "false", "true"):
        raise ConfigError(f"{name} must be 0 or 1 (or false, true), got {text!r}")
    return text.lower() in ("1", "true")


@dataclass(frozen=True)
class TrainingBudget:
    """How long a run trains; equal budgets make a baseline and MICD comparable. Defaults are nnU-Net's, except
    save_every."""
    num_epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    #: write checkpoint_latest.pth every this many epochs (nnU-Net writes it every 50)
    save_every: int = 1
    seed: Optional[int] = None
    #: nnU-Net's validation after training; runs that predict a held-out split instead can leave it out (on fold
    #: 'all' it validates on the training cases)
    final_validation: bool = True
    #: each field's environment variable: the one place the budget's contract with nnUNetv2_train is spelled out
    ENVIRONMENT: ClassVar[Dict[str, str]] = {
        "num_epochs": "MICD_NUM_EPOCHS", "iterations_per_epoch": "MICD_ITERS_PER_EPOCH",
        "val_iterations": "MICD_VAL_ITERS", "save_every": "MICD_SAVE_EVERY", "seed": "MICD_SEED",
        "final_validation": "MICD_FINAL_VALIDATION"}

    @classmethod
    def from_environment(cls) -> "TrainingBudget":
        """What the trainers read."""
        default, variable = cls(), cls.ENVIRONMENT
        return cls(
            num_epochs=_int_from_environment(variable["num_epochs"], default.num_epochs),
            iterations_per_epoch=_int_from_environment(variable["iterations_per_epoch"], default.iterations_per_epoch),
            val_iterations=_int_from_environment(variable["val_iterations"], default.val_iterations),
            save_every=_int_from_environment(variable["save_every"], default.save_every),
            seed=_int_from_environment(variable["seed"], None, minimum=0),
            final_validation=_flag_from_environment(variable["final_validation"], default.final_validation),
        )

    def to_environment(self) -> Dict[str, str]:
        """What a program that starts nnUNetv2_train (the demo, the benchmark) sets for this budget."""
        values = {name: getattr(self, name) for name in self.ENVIRONMENT}
        return {self.ENVIRONMENT[name]: str(int(value)) for name, value in values.items() if value is not None}

    @property
    def total_steps(self) -> int:
        return self.num_epochs * self.iterations_per_epoch

    def to_dict(self) -> dict:
        return asdict(self)
