"""FlexiPrune mode reproduces the published tables exactly."""
import pytest

from pdsearch.errors import PdsearchError
from pdsearch.policy import TABLES, Policy

# The tables as printed in FlexiPrune's publication (percent, conv layers in order),
# transcribed independently of pdsearch/policy/flexiprune_tables.py.
PUBLISHED = """
alexnet PD1 50 50 50 50 50
alexnet PD2 34 48 56 66 76
alexnet PD3 70 60 44 30 18
alexnet PD4 68 42 28 40 70
alexnet PD5 32 56 76 54 32
vgg11 PD1 50 50 50 50 50 50 50 50
vgg11 PD2 20 40 46 50 58 60 68 72
vgg11 PD3 70 66 58 58 40 40 34 24
vgg11 PD4 20 40 60 62 62 60 18 18
vgg11 PD5 68 52 40 40 50 52 72 72
vgg13 PD1 50 50 50 50 50 50 50 50 50 50
vgg13 PD2 26 28 38 48 58 60 78 70 70 72
vgg13 PD3 72 70 64 60 58 50 38 28 18 10
vgg13 PD4 70 68 60 50 28 28 46 60 68 70
vgg13 PD5 28 38 48 58 68 66 58 46 36 28
vgg16 PD1 50 50 50 50 50 50 50 50 50 50 50 50 50
vgg16 PD2 20 40 46 46 50 50 50 60 60 60 68 70 70
vgg16 PD3 70 70 62 62 50 50 50 40 40 40 34 34 32
vgg16 PD4 30 30 48 48 60 60 60 60 60 60 30 30 30
vgg16 PD5 66 64 50 50 40 40 40 50 50 50 64 66 66
vgg19 PD1 50 50 50 50 50 50 50 50 50 50 50 50 50 50 50 50
vgg19 PD2 36 38 42 44 46 48 48 50 54 56 58 60 64 66 68 70
vgg19 PD3 70 68 66 64 60 54 52 50 48 44 38 36 32 30 28 24
vgg19 PD4 70 68 58 50 48 44 38 40 44 46 48 52 58 62 66 70
vgg19 PD5 30 38 40 44 48 50 58 60 70 62 60 50 46 38 32 26
"""
TABLE = {(a, pd): [int(v) for v in rest] for a, pd, *rest in (line.split() for line in PUBLISHED.strip().splitlines())}
GPRS = [10, 20, 25, 30, 50, 60]


def expected_list(arch: str, pd: str, gpr: int) -> list[float]:
    conv = [(t * gpr // 50) / 100 for t in TABLE[(arch, pd)]]  # trunc(T·GPR/50)/100
    return conv + [gpr / 100, gpr / 100, 0.0]


def test_tables_match_publication():
    assert {(a, pd): v for a, t in TABLES.items() for pd, v in t.items()} == TABLE


@pytest.mark.parametrize("arch,input_size", [("alexnet", 64), ("vgg11", 32), ("vgg13", 32), ("vgg16", 32), ("vgg19", 32)])
def test_flexiprune_lists_exact(planners, arch, input_size):
    planner = planners(arch, input_size)
    for pd in ("PD1", "PD2", "PD3", "PD4", "PD5"):
        for gpr in GPRS:
            if max(TABLE[(arch, pd)]) * gpr / 5000 >= 1:
                continue
            plan = planner.plan(Policy(gpr=gpr, pd=pd, mode="flexiprune"))
            assert plan.flexiprune_list == expected_list(arch, pd, gpr), (arch, pd, gpr)


def test_worked_example_vgg16_pd2_gpr30(planners):
    plan = planners("vgg16").plan(Policy(gpr=30, pd="PD2", mode="flexiprune"))
    assert plan.flexiprune_list == [0.12, 0.24, 0.27, 0.27, 0.3, 0.3, 0.3, 0.36, 0.36, 0.36, 0.4, 0.42, 0.42, 0.3, 0.3, 0.0]


def test_batchnorm_variant_uses_same_table(planners):
    plan = planners("vgg16_bn").plan(Policy(gpr=50, pd="PD3", mode="flexiprune"))
    assert plan.flexiprune_list == expected_list("vgg16", "PD3", 50)


def test_published_pd4_pd5_swap_is_kept():
    # AlexNet's published "PD4" is high-low-high and "PD5" low-high-low (see docs).
    pd4, pd5 = TABLES["alexnet"]["PD4"], TABLES["alexnet"]["PD5"]
    assert pd4[0] > pd4[2] < pd4[-1]
    assert pd5[0] < pd5[2] > pd5[-1]


def test_rate_reaching_100_percent_is_an_error(planners):
    with pytest.raises(PdsearchError, match="would prune 109% of conv layer 7"):
        planners("vgg13").plan(Policy(gpr=70, pd="PD2", mode="flexiprune"))


def test_flexiprune_rejects_other_architectures(planners):
    with pytest.raises(PdsearchError, match="flexiprune mode covers AlexNet"):
        planners("resnet20").plan(Policy(gpr=30, pd="PD1", mode="flexiprune"))


def test_flexiprune_needs_named_pd():
    with pytest.raises(PdsearchError, match="named PD"):
        Policy(gpr=30, pd=None, slope=0.2, mode="flexiprune")
