"""Feature dashboards: HTML pages for SAE features and SAS vectors (see :func:`build_dashboard`)."""

from .. import moved
from .pages import build_dashboard

__all__ = ["build_dashboard"]

# the per-SAE feature cache and the contrast finder compute, so they moved a floor down (the cache lives in
# sas.activations.feature_cache); their old names here work for one release
__getattr__ = moved(__name__, "sas.evaluation.features", ("FeatureCache", "feature_cache", "vector_contrast"))
