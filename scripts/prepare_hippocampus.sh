#!/usr/bin/env bash
# The shared MSD Hippocampus MRI as a semi-supervised nnU-Net dataset, ready for nnUNetv2_train:
# 10 labeled cases, 40 held-out test cases, the other 150 as unlabeled images, preprocessed for 3d_fullres,
# plus tiny plans for CPU training.
#
#   scripts/prepare_hippocampus.sh [path/to/Task04_Hippocampus] [labeled count] [new dataset id]
#
# nnUNet_raw, nnUNet_preprocessed and nnUNet_results must be set, as for nnU-Net itself.
set -euo pipefail
SOURCE=${1:-"$(dirname "$0")/../../shared/data/Task04_Hippocampus"}
LABELED=${2:-10}
TARGET=${3:-601}

if ! ls "$nnUNet_raw" | grep -q '^Dataset004_'; then
    nnUNetv2_convert_MSD_dataset -i "$SOURCE"
fi
micd make-ssl-dataset -d 4 -o "$TARGET" --labeled "$LABELED" --test 40 --seed 0
nnUNetv2_plan_and_preprocess -d "$TARGET" -c 3d_fullres
micd preprocess-unlabeled -d "$TARGET" -c 3d_fullres
micd tiny-plans -d "$TARGET"
echo "Train with: nnUNet_extTrainer=\$(micd trainer-path) nnUNetv2_train $TARGET 3d_fullres 0 -tr nnUNetTrainerMICD -p nnUNetPlans_tiny -device cpu"
