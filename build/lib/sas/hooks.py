"""Where steering and reading happen in the model: TransformerLens hook names.

Every vector and SAE in ``sas`` addresses the residual stream after a block,
``blocks.{layer}.hook_resid_post``. Vector files name their hook; only the names below are accepted
from a file, so an edited file cannot point an edit at another place in the model.
"""

from __future__ import annotations

import re

RESID_HOOK = "blocks.{layer}.hook_resid_post"
HOOK_TEMPLATES = (RESID_HOOK, "blocks.{layer}.hook_resid_pre")
_LAYER = re.compile(r"blocks\.(\d+)\.")


def resid_hook(layer: int) -> str:
    """``blocks.{layer}.hook_resid_post``."""
    return RESID_HOOK.format(layer=int(layer))


def layer_of(hook_name: str) -> int:
    """The block index of a hook name such as ``blocks.9.hook_resid_post`` (9)."""
    m = _LAYER.match(str(hook_name))
    if m is None:
        raise ValueError(f"{hook_name!r} is not a block hook such as 'blocks.9.hook_resid_post'")
    return int(m.group(1))


def template_of(hook_name: str) -> str:
    """The template of a hook name (``blocks.9.hook_resid_post`` -> ``blocks.{layer}.hook_resid_post``), checked by
    :func:`check_hook_template`."""
    layer_of(hook_name)
    return check_hook_template(_LAYER.sub("blocks.{layer}.", str(hook_name), count=1))


def check_hook_template(template: str) -> str:
    """``template`` if it is one of the hook templates ``sas`` writes (:data:`HOOK_TEMPLATES`), else ``ValueError``."""
    if template not in HOOK_TEMPLATES:
        raise ValueError(f"unsupported hook {template!r}: sas steers and reads only {', '.join(HOOK_TEMPLATES)}; "
                         "rebuild the vector with sas rather than editing its file")
    return template


def hook_at(template: str, layer: int) -> str:
    """The hook name of ``template`` (checked by :func:`check_hook_template`) at ``layer``. Never
    ``str.format``: a template from a file must not reach attribute lookups or format specs."""
    return check_hook_template(template).replace("{layer}", str(int(layer)))
