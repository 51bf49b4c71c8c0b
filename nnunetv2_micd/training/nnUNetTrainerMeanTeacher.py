"""Mean Teacher (Tarvainen & Valpola, 2017) as an nnU-Net trainer: a baseline for MICD at equal settings.

One student, nnU-Net's planned network, and its EMA teacher. On unlabeled patches the student's class
probabilities follow the teacher's, which sees the same patch with a little Gaussian noise added. Prediction uses
the student, a plain nnU-Net network.
"""
import torch

from nnunetv2_micd.method.config import MeanTeacherConfig
from nnunetv2_micd.method.ema import create_ema_teacher
from nnunetv2_micd.method.losses import softmax_mse_loss
from nnunetv2_micd.training.nnUNetTrainerSemiSupervised import StepLosses, first_samples, highest_resolution, \
    nnUNetTrainerSemiSupervised


class nnUNetTrainerMeanTeacher(nnUNetTrainerSemiSupervised):
    config_class = MeanTeacherConfig

    @property
    def students(self):
        return (self.unwrapped_network,)

    def initialize(self):
        super().initialize()
        teacher = create_ema_teacher(self.unwrapped_network)
        teacher.decoder.deep_supervision = False
        self.teachers = [teacher]

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        noise_std = self.method_config.input_noise
        return x + torch.clamp(torch.randn_like(x) * noise_std, -2 * noise_std, 2 * noise_std)

    def compute_losses(self, data: torch.Tensor, target, unlabeled: torch.Tensor) -> StepLosses:
        num_labeled = data.shape[0]
        # one forward for labeled and unlabeled patches: instance norm works per sample, so this is exact
        output = self.network(torch.cat((data, unlabeled)))  # through a DDP wrapper when there is one
        with torch.no_grad():
            teacher_logits = self.teachers[0](self._noisy(unlabeled))
        consistency = softmax_mse_loss(highest_resolution(output)[num_labeled:], teacher_logits)
        return StepLosses(self.loss(first_samples(output, num_labeled), target), {"consistency": consistency})
