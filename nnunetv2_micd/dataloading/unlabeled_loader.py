"""Random augmented patches of the preprocessed unlabeled cases, drawn the way nnU-Net draws labeled ones.

Batches have a fixed structure::

    {'data': float32 tensor (batch_size, channels, *patch_size), 'keys': list of case ids}

The patches go through the trainer's own training transforms (same spatial and intensity augmentation as the
labeled batches). The only "segmentation" an unlabeled case has is nnU-Net's nonzero mask, which the transforms
use for masked normalisation and which is then dropped.
"""
from typing import Sequence

from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunetv2_micd.errors import DataError, UsageError
from nnunetv2_micd.preprocessing.unlabeled_store import UnlabeledStore


class nnUNetDatasetUnlabeled(nnUNetDatasetBlosc2):
    """Preprocessed unlabeled cases. They have no foreground locations, so every patch is sampled at random.

    Only cases that ``micd preprocess-unlabeled`` recorded as complete are used, never a half-written one.
    """

    def __init__(self, folder: str):
        super().__init__(folder, UnlabeledStore(folder).recorded_cases())

    def load_case(self, identifier):
        data, seg, seg_prev, properties = super().load_case(identifier)
        properties.setdefault("class_locations", {})
        return data, seg, seg_prev, properties


class UnlabeledDataLoader(nnUNetDataLoader):
    def __init__(self, data: nnUNetDatasetUnlabeled, batch_size: int, initial_patch_size: Sequence[int],
                 patch_size: Sequence[int], label_manager: LabelManager, transforms: BasicTransform = None):
        if label_manager.has_ignore_label:
            raise DataError("unlabeled patches cannot be sampled for datasets with an ignore label")
        super().__init__(data, batch_size, initial_patch_size, patch_size, label_manager,
                         oversample_foreground_percent=0.0, transforms=transforms)

    def generate_train_batch(self):
        batch = super().generate_train_batch()
        return {"data": batch["data"], "keys": batch["keys"]}


def make_augmenter(loader, num_processes: int, pin_memory: bool = False):
    """Background workers like nnU-Net's training loader; 0 workers runs in the calling process."""
    if num_processes < 0:
        raise UsageError(f"number of augmentation workers must be >= 0, got {num_processes}")
    if num_processes == 0:
        return SingleThreadedAugmenter(loader, None)
    return NonDetMultiThreadedAugmenter(loader, None, num_processes=num_processes,
                                        num_cached=max(6, num_processes // 2), seeds=None,
                                        pin_memory=pin_memory, wait_time=0.002)
