"""Steering vectors in formats other tools run: GGUF control vectors for llama.cpp (:mod:`sas.export.gguf`)."""

from .gguf import control_vector, load_gguf, read_directions, save_gguf

__all__ = ["control_vector", "load_gguf", "read_directions", "save_gguf"]
