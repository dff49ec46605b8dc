"""Steering vectors as values (dense and sparse), the protocol both implement, and the one place that turns them
into hooks (:func:`steer`, with a :class:`Receipt` of what it edited)."""

from ..forward.positions import POSITIONS, Batch, batch_positions, position_mask
from .condition import Condition, condition_from_texts, load_condition
from .kinds import Vector, load_vector
from .sparse import SparseVector
from .steer import NoEdit, Receipt, SteeringError, Term, steer, steer_terms, steering_hooks
from .vector import SteeringVector

__all__ = ["POSITIONS", "Batch", "Condition", "NoEdit", "Receipt", "SparseVector", "SteeringError", "SteeringVector",
           "Term", "Vector", "batch_positions", "condition_from_texts", "load_condition", "load_vector",
           "position_mask", "steer", "steer_terms", "steering_hooks"]
