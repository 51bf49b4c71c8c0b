#!/bin/bash
# Predicts and evaluates a finished `micd demo` once more with both MICD branches, for a demo that trained MICD with
# {"inference_mode": "student_a"}: the same two trained networks, predicting as the default ensemble does.
#     scripts/demo_both_branches.sh DEMO_FOLDER
# writes DEMO_FOLDER/predictions/nnUNetTrainerMICD_both_branches (with nnU-Net's summary.json)
set -e
D=$(readlink -f "$1")
export nnUNet_raw=$D/nnUNet_raw nnUNet_preprocessed=$D/nnUNet_preprocessed nnUNet_results=$D/nnUNet_results
export nnUNet_extTrainer=$(micd trainer-path)
DATASET=Dataset999_MICDDemo
MODEL=$nnUNet_results/$DATASET/nnUNetTrainerMICD__nnUNetPlans_tiny__3d_fullres/fold_all
# the saved network carries its inference mode as the buffer use_branch_b; switch it on in a copy of the checkpoint
python - "$MODEL" <<'P'
import sys
import torch
folder = sys.argv[1]
checkpoint = torch.load(f"{folder}/checkpoint_final.pth", map_location="cpu", weights_only=False)
checkpoint["network_weights"]["use_branch_b"] = torch.tensor(True)
torch.save(checkpoint, f"{folder}/checkpoint_both_branches.pth")
P
OUT=$D/predictions/nnUNetTrainerMICD_both_branches
nnUNetv2_predict -i $nnUNet_raw/$DATASET/imagesTs -o $OUT -d 999 -c 3d_fullres -f all -tr nnUNetTrainerMICD \
    -p nnUNetPlans_tiny -device cpu -chk checkpoint_both_branches.pth -npp 0 -nps 0
nnUNetv2_evaluate_folder $nnUNet_raw/$DATASET/labelsTs $OUT -djfile $nnUNet_preprocessed/$DATASET/dataset.json \
    -pfile $nnUNet_preprocessed/$DATASET/nnUNetPlans_tiny.json -np 2
