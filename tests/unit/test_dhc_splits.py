"""DHC's published split lists, as shipped: counts, no overlaps, no test leakage."""
import pytest

from nnunetv2_micd.dataset_conversion.dhc_benchmarks import AMOS, SYNAPSE, dhc_split


@pytest.mark.parametrize("benchmark, labeled, counts", [
    (SYNAPSE, "10%", (2, 18, 4, 6)), (SYNAPSE, "20%", (4, 16, 4, 6)), (SYNAPSE, "40%", (8, 12, 4, 6)),
    (AMOS, "2%", (4, 212, 24, 120)), (AMOS, "5%", (10, 206, 24, 120)), (AMOS, "10%", (21, 195, 24, 120)),
])
def test_published_counts_and_no_leakage(benchmark, labeled, counts):
    split = dhc_split(benchmark, labeled)
    assert tuple(len(split[k]) for k in ("labeled", "unlabeled", "eval", "test")) == counts
    groups = [set(split[k]) for k in ("labeled", "unlabeled", "eval", "test")]
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # pairwise disjoint
    assert all(len(split[k]) == len(set(split[k])) for k in split)  # no case listed twice


def test_every_fraction_draws_from_the_same_training_cases():
    pools = [set(dhc_split(SYNAPSE, f)["labeled"]) | set(dhc_split(SYNAPSE, f)["unlabeled"])
             for f in ("10%", "20%", "40%")]
    assert pools[0] == pools[1] == pools[2] and len(pools[0]) == 20


def test_synapse_test_cases_are_dhcs():
    assert dhc_split(SYNAPSE, "20%")["test"] == ["0004", "0007", "0010", "0033", "0035", "0036"]


def test_amos_test_cases_are_the_validation_release_with_its_mri():
    test = dhc_split(AMOS, "2%")["test"]
    assert all(c.startswith("amos_") for c in test)
    assert sum(int(c[5:]) >= 500 for c in test) == 20


@pytest.mark.parametrize("benchmark, labeled", [(SYNAPSE, "5%"), (AMOS, "20%"), (AMOS, "10")])
def test_unpublished_fractions_are_refused(benchmark, labeled):
    with pytest.raises(ValueError, match="DHC published"):
        dhc_split(benchmark, labeled)
