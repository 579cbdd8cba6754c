"""Pruning: channel groups of a model (structure), which channels go (criteria), removal (prune)."""
from pdsearch.pruning.prune import accumulate_gradients, check_prunable, full_group, lowest_channels, prune
from pdsearch.pruning.structure import ChannelGroup, ModelStructure, analyze

__all__ = ["ChannelGroup", "ModelStructure", "accumulate_gradients", "analyze", "check_prunable", "full_group", "lowest_channels", "prune"]
