"""``micd suggest``: which scans to label next, ranked from the per-case scores of ``micd predict-uncertainty``.

The ranking is by score (the mean uncertainty over the predicted structures and the band around them), highest
first; ties go by case id, so a fixed model and input give the same ranking. With ``diversity`` > 0 the picks are
spread over dissimilar scans (maximal marginal relevance): each next pick maximises its normalised score plus
``diversity`` times its normalised distance to the nearest case already picked, the distance being between the
cases' intensity histograms (of the normalised image), so that near-duplicates of a picked scan wait their turn.

Where one annotation covers several cases (ACDC's two cardiac phases of a patient), ``group_cases`` makes them one
entry of the ranking, with the mean of their scores and histograms.
"""
import csv
import re
from typing import Dict, List

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join, save_json

from nnunetv2_micd.errors import DataError


def _normalised(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def group_cases(cases: Dict[str, dict], pattern: str) -> Dict[str, dict]:
    """The cases whose ids share the first match of ``pattern`` (``patient\\d+``) as one entry each: the means of
    their scores, map means and histograms, and their ids under ``cases``."""
    expression = re.compile(pattern)
    groups: Dict[str, List[str]] = {}
    for case in sorted(cases):
        match = expression.search(case)
        if match is None:
            raise DataError(f"case {case} does not match the group pattern {pattern!r}")
        groups.setdefault(match.group(0), []).append(case)
    grouped = {}
    for group, members in groups.items():
        means = sorted(key for key in cases[members[0]] if key.startswith("mean_"))
        grouped[group] = {"score": float(np.mean([cases[c]["score"] for c in members])),
                          **{key: float(np.mean([cases[c][key] for c in members])) for key in means},
                          "image_histogram": np.mean([cases[c]["image_histogram"] for c in members], axis=0),
                          "cases": " ".join(members)}
    return grouped


def rank_cases(cases: Dict[str, dict], diversity: float = 0.0) -> List[dict]:
    """Every case in suggestion order: rank, case, score, each map's mean and the histogram distance to the nearest
    earlier pick."""
    if not cases:
        raise DataError("no case to rank")
    names = sorted(cases)
    scores = np.array([cases[name]["score"] for name in names], dtype=np.float64)
    histograms = np.array([cases[name]["image_histogram"] for name in names], dtype=np.float64)
    relevance = _normalised(scores)
    picked: List[int] = []
    nearest = np.full(len(names), np.inf)
    ranking = []
    while len(picked) < len(names):
        remaining = [i for i in range(len(names)) if i not in picked]
        if picked and diversity > 0:
            spread = _normalised(np.where(np.isinf(nearest), 0.0, nearest))
            value = relevance + diversity * spread
        else:
            value = relevance
        best = max(remaining, key=lambda i: (value[i], -i))  # the earlier case id on ties
        ranking.append({"rank": len(picked) + 1, "case": names[best], "score": float(scores[best]),
                        **{key: value for key, value in cases[names[best]].items()
                           if key.startswith("mean_") or key == "cases"},
                        "distance_to_earlier_picks": None if not picked else float(nearest[best])})
        picked.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(histograms - histograms[best], axis=1))
    return ranking


def write_ranking(ranking: List[dict], output_folder: str, settings: dict) -> str:
    """ranking.json (with the settings that made it) and ranking.csv; returns the csv's path."""
    save_json({**settings, "ranking": ranking}, join(output_folder, "ranking.json"), sort_keys=False)
    csv_file = join(output_folder, "ranking.csv")
    with open(csv_file, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ranking[0]))
        writer.writeheader()
        writer.writerows(ranking)
    return csv_file
