"""Deterministic synthetic world (customers, identity events, blocks, care contacts, stream, truth)
on which every later stage is developed and measured."""

from identigraph.synth.io import write_world
from identigraph.synth.params import SynthParams
from identigraph.synth.world import World, generate_world

__all__ = ["SynthParams", "World", "generate_world", "write_world"]
