"""Activations read from the residual stream, and their SAE codes."""
