"""``micd check-uncertainty``: do a model's per-case uncertainty scores find its bad predictions?

On held-out labeled cases, from ``uncertainty.json`` (``micd predict-uncertainty``) and the ``summary.json`` that
``nnUNetv2_evaluate_folder`` wrote for the same predictions:

- Spearman's rank correlation between each case's score and its Dice (mean over the classes present): a useful
  score correlates negatively;
- AUROC of the score for finding the worst quarter of the cases by Dice (at least one case): 0.5 is chance;
- the same for a trivial score fixed beforehand, the negative predicted foreground volume (small predicted structures
  being what a model trained on few labels gets wrong), which a useful score must beat.
"""
from typing import Dict

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json
from scipy.stats import spearmanr

from nnunetv2_micd.evaluation.summaries import dice_from_summary
from nnunetv2_micd.errors import DataError


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive case scores above a negative one (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        raise DataError("AUROC needs cases on both sides")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def score_quality(cases: Dict[str, dict], case_dice: Dict[str, float]) -> dict:
    """The measures above, with each case's score and Dice (what the picture of the two draws)."""
    names = sorted(set(cases) & {case for case, dice in case_dice.items() if dice is not None})
    if len(names) < 4:
        raise DataError(f"{len(names)} cases with both a score and a Dice; at least 4 are needed")
    dice = np.array([case_dice[name] for name in names])
    worst = np.zeros(len(names), dtype=bool)
    worst[np.argsort(dice, kind="stable")[:max(1, len(names) // 4)]] = True
    result = {"cases": len(names), "score_map": cases[names[0]]["score_map"],
              "worst_quarter": [name for name, w in zip(names, worst) if w],
              "per_case": {name: {"score": cases[name]["score"], "dice": case_dice[name]} for name in names},
              "scores": {}}
    scores = {"score": np.array([cases[name]["score"] for name in names]),
              "negative predicted volume": -np.array([cases[name]["foreground_voxels"] for name in names], float)}
    for key in sorted(k for k in cases[names[0]] if k.startswith("mean_") and k != "mean_dice"):
        scores[key] = np.array([cases[name][key] for name in names])
    for name, values in scores.items():
        rho, p_value = spearmanr(values, dice)
        result["scores"][name] = {"spearman_rho_with_dice": float(rho), "spearman_p": float(p_value),
                                  "auroc_worst_quarter": auroc(values, worst)}
    return result


def check_uncertainty(uncertainty_file: str, summary_file: str) -> dict:
    return score_quality(load_json(uncertainty_file)["cases"], dice_from_summary(summary_file)["case_mean_dice"])


def plot_score_against_dice(result: dict, filename: str) -> None:
    """Each case's score against its Dice, the worst quarter marked (``result`` from :func:`score_quality`)."""
    from nnunetv2_micd.plotting import plt, save_figure
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    worst = set(result["worst_quarter"])
    for marked, label in ((False, "other cases"), (True, "worst quarter by Dice")):
        chosen = [case for name, case in result["per_case"].items() if (name in worst) == marked]
        ax.scatter([case["score"] for case in chosen], [case["dice"] for case in chosen], label=label,
                   marker="x" if marked else "o")
    score = result["scores"]["score"]
    ax.set_xlabel(f"case score: mean {result['score_map']}, structures and band")
    ax.set_ylabel("case Dice (mean over classes)")
    ax.set_title(f"Spearman ρ {score['spearman_rho_with_dice']:+.2f}, AUROC {score['auroc_worst_quarter']:.2f}",
                 fontsize=10)
    ax.legend()
    save_figure(fig, filename)


def plot_case(image_file: str, segmentation_file: str, map_files: Dict[str, str], filename: str) -> None:
    """The slice with the most predicted foreground: the image with the segmentation's outline, and each map."""
    import SimpleITK as sitk
    from nnunetv2_micd.plotting import plt, save_figure
    image = sitk.GetArrayFromImage(sitk.ReadImage(image_file))
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(segmentation_file))
    index = int(np.argmax((segmentation > 0).reshape(segmentation.shape[0], -1).sum(1)))
    fig, axes = plt.subplots(1, 1 + len(map_files), figsize=(4 * (1 + len(map_files)), 4))
    axes[0].imshow(image[index], cmap="gray")
    axes[0].contour(segmentation[index], levels=np.arange(0.5, segmentation.max() + 1), linewidths=0.8)
    axes[0].set_title("image and segmentation")
    for ax, (name, file) in zip(axes[1:], map_files.items()):
        shown = ax.imshow(sitk.GetArrayFromImage(sitk.ReadImage(file))[index], cmap="magma", vmin=0, vmax=100)
        ax.set_title(f"{name} (%)")
        fig.colorbar(shown, ax=ax, fraction=0.046)
    for ax in axes:
        ax.axis("off")
    save_figure(fig, filename)
