"""The layout of ``micd predict-uncertainty``'s output folder, without torch, for the commands that only read it.

Output folder::

    <case><ending>                           the segmentation, as nnUNetv2_predict writes it
    uncertainty/<case>_<map><ending>         each map in whole percent (see nnunetv2_micd.inference.uncertainty)
    uncertainty.json                         {"model": ..., "maps": [...], "cases": {case: summary}}

The maps lie in a subfolder so that ``nnUNetv2_evaluate_folder`` on the output folder sees segmentations only.
"""
from batchgenerators.utilities.file_and_folder_operations import join

SUMMARY_FILE = "uncertainty.json"
MAPS_FOLDER = "uncertainty"


def map_file(output_folder: str, case: str, map_name: str, ending: str) -> str:
    """Where a case's uncertainty map is written (as percent, 0-100, in the image's geometry)."""
    return join(output_folder, MAPS_FOLDER, f"{case}_{map_name}{ending}")
