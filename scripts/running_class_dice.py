#!/usr/bin/env python
"""Prints (and writes as JSON) a MICD model's running soft Dice per class on the labeled patches, as its final
checkpoint keeps it: whether the students learned a class from the labels at all.

    scripts/running_class_dice.py path/to/nnUNetTrainerMICD__plans__configuration/fold_all [out.json]
"""
import json
import sys

import torch


def running_dice(fold_folder: str) -> dict:
    state = torch.load(f"{fold_folder}/checkpoint_final.pth", map_location="cpu", weights_only=False)["micd"]
    values = {}
    if "class_weights" in state and "dice" in state["class_weights"][0]:  # the simplified DHC weights
        values["student A (class weights)"] = state["class_weights"][0]["dice"].tolist()
    for student, statistics in zip("AB", state.get("learned_classes", [])):
        values[f"student {student} (learned classes)"] = statistics["dice"].tolist()
    return values


if __name__ == "__main__":
    values = running_dice(sys.argv[1])
    print(json.dumps(values, indent=1))
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump(values, f, indent=1)
