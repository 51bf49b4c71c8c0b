"""nnU-Net's local logger, extended by the MICD terms, with a second progress picture for them."""
import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.logging.nnunet_logger import LocalLogger

MICD_LOG_KEYS = ("loss_sup", "loss_mcpc", "loss_cfc", "loss_cmd", "unsupervised_weight", "disagreement")
MICD_PROGRESS_FILE = "progress_micd.png"


class MICDLocalLogger(LocalLogger):
    """Keeps nnU-Net's one-value-per-epoch lists and adds one list per MICD key."""

    def __init__(self, verbose: bool = False):
        super().__init__(verbose)
        for key in MICD_LOG_KEYS:
            self.my_fantastic_logging[key] = []

    def load_checkpoint(self, checkpoint: dict):
        # runs started before a key existed still resume
        super().load_checkpoint({**{key: [] for key in MICD_LOG_KEYS}, **checkpoint})

    def plot_micd_png(self, output_folder: str) -> None:
        logged = self.my_fantastic_logging
        epochs = min(len(logged[key]) for key in MICD_LOG_KEYS)
        x = list(range(epochs))
        with plt.style.context("default"):  # nnU-Net's progress plot changes the global style
            self._plot(x, epochs, join(output_folder, MICD_PROGRESS_FILE))

    def _plot(self, x, epochs: int, filename: str) -> None:
        logged = self.my_fantastic_logging
        fig, (losses, weight, disagreement) = plt.subplots(3, 1, figsize=(12, 14))
        for key in ("loss_sup", "loss_mcpc", "loss_cfc", "loss_cmd"):
            losses.plot(x, logged[key][:epochs], label=key, linewidth=2)
        losses.set_ylabel("loss (unweighted)")
        losses.legend()
        weight.plot(x, logged["unsupervised_weight"][:epochs], color="k", linewidth=2)
        weight.set_ylabel("λ(t) at epoch end")
        disagreement.plot(x, logged["disagreement"][:epochs], color="m", linewidth=2)
        disagreement.set_ylabel("branch disagreement\n(unlabeled voxels)")
        disagreement.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(filename)
        plt.close(fig)
