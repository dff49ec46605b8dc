"""Steering vectors as values (dense and sparse) and the context manager that applies them."""

from ..forward.positions import POSITIONS, Batch, batch_positions, position_mask
from .sparse import SparseVector
from .steer import steer, steering_hooks
from .vector import SteeringVector

__all__ = ["POSITIONS", "Batch", "SparseVector", "SteeringVector", "batch_positions", "position_mask", "steer",
           "steering_hooks"]
