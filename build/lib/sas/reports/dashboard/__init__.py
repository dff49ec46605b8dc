"""Feature dashboards: HTML pages for SAE features and SAS vectors (see :func:`build_dashboard`)."""

from .cache import FeatureCache, feature_cache
from .contrast import vector_contrast
from .pages import build_dashboard

__all__ = ["FeatureCache", "build_dashboard", "feature_cache", "vector_contrast"]
