"""Where a model is unsure: voxel maps and per-case scores, made by nnU-Net's own predictor.

A two-branch model (MICD, CPS) predicts with the average of its branches' logits. nnU-Net's sliding window, its
Gaussian weighting and its mirroring are linear in the network's output, so predicting each branch on its own and
averaging gives the same logits as predicting with both at once, for the same network passes. Each branch's logits
then go through nnU-Net's own export (resampling to the image's spacing, reverted cropping and transposition), and
the maps are computed from the probabilities that come out of it, in the image's geometry:

- **disagreement**: half the L1 distance between the two branches' class probabilities, from 0 (identical) to 1
  (certain of different classes); two-branch models only;
- **entropy**: the entropy of the predicted (averaged) class probabilities, divided by its maximum, log(classes).

Maps are written as whole percentages (0 to 100) with the dataset's own image writer, so they open next to the image
in any viewer. The per-case summary measures them inside each predicted structure and in a band around it, where
errors of a segmentation lie; its ``score`` (the mean of the first map over the predicted foreground and its band) is
what ``micd suggest`` ranks by.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from scipy.ndimage import binary_dilation
from torch._dynamo import OptimizedModule

from nnunetv2_micd.method.networks import DualBranchNetwork

BRANCHES = ("branch_a", "branch_b")
BAND_VOXELS = 2  # width of the band around a structure, where a segmentation's errors lie
UNCERTAIN = 0.5  # a voxel is uncertain at this disagreement or normalised entropy
HISTOGRAM_BINS = np.linspace(-3, 3, 17)  # of the normalised image, to tell dissimilar scans apart


@dataclass
class CasePrediction:
    segmentation: np.ndarray  # in the image's geometry
    maps: Dict[str, np.ndarray]  # name -> map in [0, 1], same shape; disagreement first when there is one
    properties: dict  # nnU-Net's image properties (geometry for the writer)
    image_histogram: List[float]  # of the preprocessed (normalised) image


def _branch_parameters(parameters: dict, branch: str) -> dict:
    prefix = branch + "."
    return {key[len(prefix):]: value for key, value in parameters.items() if key.startswith(prefix)}


def normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy over the class axis (axis 0), divided by log(classes): 0 for a certain voxel, 1 for a uniform one."""
    p = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    return (-(p * np.log(p)).sum(0) / np.log(probabilities.shape[0])).astype(np.float32)


def branch_disagreement(probabilities_a: np.ndarray, probabilities_b: np.ndarray) -> np.ndarray:
    """Half the L1 distance of two class-probability maps (class axis 0): the probability mass they place apart."""
    return (0.5 * np.abs(probabilities_a.astype(np.float32) - probabilities_b.astype(np.float32)).sum(0))


class UncertaintyPredictor:
    """nnU-Net's predictor for one trained model, predicting a case with its uncertainty maps."""

    def __init__(self, model_folder: str, folds, checkpoint: str, device: torch.device):
        # nnUNetv2_predict's defaults, so that the segmentation is the one nnU-Net would write
        self.predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                         perform_everything_on_device=device.type == "cuda", device=device,
                                         verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        self.predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint)
        network = self.predictor.network
        network = network._orig_mod if isinstance(network, OptimizedModule) else network
        self.dual_network = network if isinstance(network, DualBranchNetwork) and bool(network.use_branch_b) \
            else None

    @property
    def map_names(self) -> Tuple[str, ...]:
        return ("disagreement", "entropy") if self.dual_network is not None else ("entropy",)

    def _export(self, logits: torch.Tensor, properties: dict) -> Tuple[np.ndarray, np.ndarray]:
        p = self.predictor
        return convert_predicted_logits_to_segmentation_with_correct_shape(
            logits.float(), p.plans_manager, p.configuration_manager, p.label_manager, properties,
            return_probabilities=True)

    def _branch_logits(self, data: torch.Tensor, branch: str) -> torch.Tensor:
        """nnU-Net's prediction (every fold, sliding window, mirroring) with one branch as the network."""
        p = self.predictor
        network, parameters = p.network, p.list_of_parameters
        try:
            p.network = getattr(self.dual_network, branch)
            p.list_of_parameters = [_branch_parameters(fold, branch) for fold in parameters]
            return p.predict_logits_from_preprocessed_data(data)
        finally:
            p.network, p.list_of_parameters = network, parameters

    def predict_case(self, image_files: List[str]) -> CasePrediction:
        p = self.predictor
        data, properties = p.plans_manager.image_reader_writer_class().read_images(image_files)
        preprocessor = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(data, None, properties, p.plans_manager,
                                                        p.configuration_manager, p.dataset_json)
        histogram = np.histogram(np.clip(data, HISTOGRAM_BINS[0], HISTOGRAM_BINS[-1]), HISTOGRAM_BINS)[0]
        data = torch.from_numpy(np.ascontiguousarray(data)).float()
        maps = {}
        if self.dual_network is not None:
            logits = [self._branch_logits(data, branch).float() for branch in BRANCHES]
            probabilities = [self._export(branch_logits, properties)[1] for branch_logits in logits]
            maps["disagreement"] = branch_disagreement(*probabilities)
            ensemble = (logits[0] + logits[1]) / 2
        else:
            ensemble = p.predict_logits_from_preprocessed_data(data)
        segmentation, probabilities = self._export(ensemble, properties)
        maps["entropy"] = normalised_entropy(probabilities)
        return CasePrediction(segmentation, maps, properties, (histogram / max(histogram.sum(), 1)).tolist())


def _mean(values: np.ndarray) -> Optional[float]:
    return float(values.mean()) if values.size else None


def case_summary(segmentation: np.ndarray, maps: Dict[str, np.ndarray], labels: Dict[str, int],
                 voxel_volume_mm3: float) -> dict:
    """Per class: predicted volume, each map's mean inside the structure and in a band of BAND_VOXELS around it,
    and the uncertain voxels there; ``score``: the first map's mean over the predicted foreground and its band
    (over the whole image when nothing is predicted)."""
    classes = {}
    for name, value in labels.items():
        inside = segmentation == value
        around = binary_dilation(inside, iterations=BAND_VOXELS) & ~inside if inside.any() else inside
        region = inside | around
        entry = {"volume_voxels": int(inside.sum()), "volume_mm3": float(inside.sum() * voxel_volume_mm3)}
        for map_name, values in maps.items():
            entry[f"{map_name}_inside"] = _mean(values[inside])
            entry[f"{map_name}_around"] = _mean(values[around])
            entry[f"uncertain_voxels_{map_name}"] = int((values[region] >= UNCERTAIN).sum())
        classes[name] = entry
    foreground = segmentation > 0
    roi = binary_dilation(foreground, iterations=BAND_VOXELS) if foreground.any() else np.ones_like(foreground)
    score_map = next(iter(maps))
    return {"score": float(maps[score_map][roi].mean()), "score_map": score_map,
            "foreground_voxels": int(foreground.sum()),
            **{f"mean_{name}": float(values[roi].mean()) for name, values in maps.items()},
            "classes": classes}
