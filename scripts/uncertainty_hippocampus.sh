#!/usr/bin/env bash
# Do the uncertainty scores find the bad predictions on the Hippocampus test split?
# Trains labeled-only nnU-Net and MICD at 10 labeled cases (docs/uncertainty/hippocampus/protocol.json), predicts the
# 40 test cases of each with `micd predict-uncertainty`, evaluates them with nnU-Net and checks the scores against
# the Dice; the worst case of each model is drawn. Resumable: the benchmark skips finished runs, the prediction
# finished cases. With TRAINER names, only those (labeled-only nnU-Net takes about 20 minutes on 2 CPU cores,
# MICD about 2.5 hours).
#
#   scripts/uncertainty_hippocampus.sh WORK OUT [TRAINER ...]      # OUT: e.g. docs/uncertainty/hippocampus
#
# Run from the repository root (the protocol finds ../shared/data/Task04_Hippocampus from there).
set -euo pipefail
WORK=$(readlink -f "$1")
OUT=$(readlink -f "$2")
shift 2
TRAINERS=${*:-nnUNetTrainerBudget nnUNetTrainerMICD}
PROTOCOL=docs/uncertainty/hippocampus/protocol.json

micd benchmark "$PROTOCOL" -o "$WORK" --device cpu --only $TRAINERS
cp "$WORK/results.json" "$OUT/results.json"

export nnUNet_raw=$WORK/nnUNet_raw nnUNet_preprocessed=$WORK/nnUNet_preprocessed
export nnUNet_extTrainer=$(micd trainer-path)
DATASET=Dataset610_Hippocampus
for TRAINER in $TRAINERS; do
    export nnUNet_results=$WORK/runs/${TRAINER}__labeled10__seed0/nnUNet_results
    PRED=$WORK/uncertainty/$TRAINER
    FIGURES=$OUT/$TRAINER
    mkdir -p "$FIGURES"
    micd predict-uncertainty -i "$nnUNet_raw/$DATASET/imagesTs" -o "$PRED" -d 610 -c 3d_fullres -p nnUNetPlans_tiny \
        -tr "$TRAINER" -f all -device cpu
    nnUNetv2_evaluate_folder "$nnUNet_raw/$DATASET/labelsTs" "$PRED" -djfile "$PRED/dataset.json" \
        -pfile "$PRED/plans.json" -np 2
    micd check-uncertainty "$PRED/uncertainty.json" "$PRED/summary.json" --json "$FIGURES/check.json" \
        --plot "$FIGURES/score_against_dice.png"
    cp "$PRED/uncertainty.json" "$PRED/summary.json" "$FIGURES/"
    WORST=$(python -c "import sys; from nnunetv2_micd.evaluation.summaries import dice_from_summary as d
cases = {c: v for c, v in d(sys.argv[1])['case_mean_dice'].items() if v is not None}; print(min(cases, key=cases.get))" \
        "$PRED/summary.json")
    micd show-uncertainty "$PRED/uncertainty.json" "$WORST" -images "$nnUNet_raw/$DATASET/imagesTs" \
        -o "$FIGURES/$WORST.png"
done
