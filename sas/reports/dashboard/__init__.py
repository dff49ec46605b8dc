"""Feature dashboards: HTML pages for SAE features and SAS vectors (see :func:`build_dashboard`)."""

import warnings

from .pages import build_dashboard

__all__ = ["build_dashboard"]


def __getattr__(name: str):
    """The per-SAE feature cache and the contrast finder compute, so they moved to :mod:`sas.evaluation.features`
    (the cache itself lives in :mod:`sas.activations.feature_cache`); their old names here work for one release."""
    if name in ("FeatureCache", "feature_cache", "vector_contrast"):
        from ...evaluation import features

        warnings.warn(f"sas.reports.dashboard.{name} moved to sas.evaluation.features.{name}; the old path goes in "
                      "sas 0.3", DeprecationWarning, stacklevel=2)
        return getattr(features, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
