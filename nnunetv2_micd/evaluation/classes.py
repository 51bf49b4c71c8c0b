"""The structures a dataset segments, by the names its dataset.json gives them."""
from typing import Dict

from nnunetv2.utilities.label_handling.label_handling import LabelManager


def foreground_classes(dataset_json: dict) -> Dict[str, int]:
    """Name -> label value of each structure nnU-Net segments: neither the background nor the ignore label."""
    manager = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    return {name: value for name, value in manager.label_dict.items()
            if name != "ignore" and isinstance(value, int) and value in manager.foreground_labels}
