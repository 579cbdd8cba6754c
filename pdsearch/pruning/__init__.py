"""Pruning: channel groups of a model (structure), which channels go (criteria), removal (prune)."""
from pdsearch.pruning.prune import prune
from pdsearch.pruning.structure import ChannelGroup, ModelStructure, analyze

__all__ = ["ChannelGroup", "ModelStructure", "analyze", "prune"]
