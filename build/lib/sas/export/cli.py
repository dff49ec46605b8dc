"""``sas export --gguf OUT.gguf --vector V.safetensors``: a saved vector as a llama.cpp control vector."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
Run it in llama.cpp (the sas layer numbers are llama.cpp's: direction.N is added to the output of layer N,
TransformerLens's blocks.N.hook_resid_post):
  llama-cli -m gemma-3-270m-Q4_K_M.gguf --control-vector-scaled OUT.gguf:M --control-vector-layer-range A B
steers like sas at multiplier M on layers A..B (inclusive) with positions="all" (llama.cpp adds the vector at
every position, prompt included). Older llama.cpp builds spell it --control-vector-scaled OUT.gguf M.
--multiplier bakes M into the file instead (then use --control-vector OUT.gguf); --layers keeps only some layers.
"""


def layer_range(s: str) -> list[int]:
    """``"6"``, ``"4-8"`` (inclusive, as llama.cpp's --control-vector-layer-range) or ``"2,4,6"`` -> layers."""
    try:
        if "-" in s:
            a, b = (int(x) for x in s.split("-"))
            if a > b:
                raise ValueError
            return list(range(a, b + 1))
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer range such as 4-8 (inclusive) or a list such as 2,4,6, "
                                         f"got {s!r}")


def cmd_export(args) -> None:
    from ..steering.kinds import load_vector
    from .gguf import save_gguf

    if not args.gguf:
        raise ValueError("give --gguf OUT.gguf (the only export format so far)")
    if Path(args.vector).suffix.lower() == ".gguf":
        raise ValueError(f"{args.vector} is a GGUF control vector already; --vector takes a vector saved by "
                         "`sas vectors` or vector.save() (.safetensors). To change a GGUF's scale or layers, load it "
                         "with sas.export.gguf.load_gguf and export that")
    vec = load_vector(args.vector)  # a sparse one with the SAEs its file names
    out = Path(args.gguf)
    if out.is_dir():  # a folder: the vector's own name inside it
        out = out / (Path(args.vector).name.removesuffix(".safetensors") + ".gguf")
    out = save_gguf(vec, out, multiplier=args.multiplier, layers=args.layers, sum_positions=args.sum_positions)
    layers = args.layers or vec.layers
    sparse = " (the dense direction W_dec^T v of a SAS vector)" if vec.kind == "sparse" else ""
    print(f"{out}: {vec.method} vector{sparse}, layers {layers}, multiplier {args.multiplier:g}")
    print(f"llama.cpp: --control-vector-scaled {out}:1 --control-vector-layer-range {min(layers)} {max(layers)}")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``sas export`` on the ``sas`` subparsers."""
    e = sub.add_parser("export", help="write a saved vector as a llama.cpp GGUF control vector",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--gguf", required=True, metavar="OUT.gguf", help="the control vector file to write")
    e.add_argument("--vector", required=True, metavar="V.safetensors", help="a vector from `sas vectors` or .save()")
    e.add_argument("--multiplier", type=float, default=1.0, help="scale baked into the file (default 1)")
    e.add_argument("--layers", type=layer_range, help="only these layers, e.g. 4-8 (inclusive) or 6 or 2,4")
    e.add_argument("--sum-positions", action="store_true",
                   help="export a position-aligned ActAdd vector as its summed direction (added at every position)")
    e.set_defaults(fn=cmd_export)
    return e
