#!/usr/bin/env python
"""Prints nnU-Net's per-epoch pseudo Dice per class (its validation patches, the network it predicts with) from the
logs that final checkpoints keep: when each model learned each class.

    scripts/pseudo_dice_per_epoch.py NAME=path/to/fold_all [NAME=path/to/fold_all ...] [--json out.json]
"""
import argparse
import json

import torch


def pseudo_dice(fold_folder: str) -> list:
    logging = torch.load(f"{fold_folder}/checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    return [[round(float(d), 3) for d in epoch] for epoch in logging["dice_per_class_or_region"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=fold folder")
    parser.add_argument("--json", help="also write the values here")
    args = parser.parse_args()
    values = {name: pseudo_dice(folder) for name, folder in (m.split("=", 1) for m in args.models)}
    for name, epochs in values.items():
        print(name)
        for epoch, dice in enumerate(epochs):
            print(f"  epoch {epoch:3d}: " + "  ".join(f"{d:.3f}" for d in dice))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(values, f, indent=1)


if __name__ == "__main__":
    main()
