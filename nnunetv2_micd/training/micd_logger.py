"""nnU-Net's local logger, extended by a method's own terms, with a second progress picture for them."""
from typing import Sequence

from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.logging.nnunet_logger import LocalLogger

from nnunetv2_micd.plotting import plt, save_figure

METHOD_PROGRESS_FILE = "progress_micd.png"


class MICDLocalLogger(LocalLogger):
    """Keeps nnU-Net's one-value-per-epoch lists and adds one list per key of the method: its loss terms
    (``loss_*``), the weight λ(t) (``unsupervised_weight``) and optionally the branches' ``disagreement``."""

    def __init__(self, keys: Sequence[str], verbose: bool = False):
        super().__init__(verbose)
        self.method_keys = tuple(keys)
        for key in self.method_keys:
            self.my_fantastic_logging[key] = []

    def load_checkpoint(self, checkpoint: dict):
        # runs started before a key existed still resume; NaN for their earlier epochs keeps every list one value
        # per epoch (nnU-Net's progress.png plots as many epochs as its shortest list has)
        epochs = len(checkpoint["train_losses"])
        super().load_checkpoint({**{key: [float("nan")] * epochs for key in self.method_keys}, **checkpoint})

    def plot_method_png(self, output_folder: str) -> None:
        epochs = min(len(self.my_fantastic_logging[key]) for key in self.method_keys)
        with plt.style.context("default"):  # nnU-Net's progress plot changes the global style
            self._plot(list(range(epochs)), epochs, join(output_folder, METHOD_PROGRESS_FILE))

    def _plot(self, x, epochs: int, filename: str) -> None:
        logged = self.my_fantastic_logging
        panels = [[key for key in self.method_keys if key.startswith("loss_")],
                  [key for key in self.method_keys if key == "unsupervised_weight"],
                  [key for key in self.method_keys if key == "disagreement"]]
        labels = ["loss (unweighted)", "λ(t) at epoch end", "branch disagreement\n(unlabeled voxels)"]
        panels, labels = zip(*[(keys, label) for keys, label in zip(panels, labels) if keys])
        fig, axes = plt.subplots(len(panels), 1, figsize=(12, 4.7 * len(panels)), squeeze=False)
        axes = axes[:, 0]
        for ax, keys, label in zip(axes, panels, labels):
            for key in keys:
                ax.plot(x, logged[key][:epochs], label=key, linewidth=2)
            ax.set_ylabel(label)
            if len(keys) > 1:
                ax.legend()
        axes[-1].set_xlabel("epoch")
        save_figure(fig, filename)
