"""Execute the notebooks in place and keep their outputs small, so that a reader sees results without running
them (python notebooks/execute_notebooks.py [NAME.ipynb ...]).

Regenerate the cells first with make_notebooks.py. Notebooks run one at a time (each loads the real model), in a
temporary folder so that what they write stays out of the repository. Outputs are shrunk before writing: PNGs
downscaled, long text cut, progress bars dropped, execution timestamps removed. Any cell error stops the script
with a non-zero exit (CI runs the same notebooks with tests/test_notebooks.py)."""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent
MAX_WIDTH = 640  # px of a committed PNG
MAX_LINES = 30  # of a text output
MAX_HTML = 150_000  # bytes of an HTML output (an inline dashboard page is about 60 kB)


def shrink_png(data: str) -> str:
    """A base64 PNG downscaled to at most MAX_WIDTH pixels wide and re-encoded with a 256-colour palette."""
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(data)))
    if img.width > MAX_WIDTH:
        img = img.resize((MAX_WIDTH, round(img.height * MAX_WIDTH / img.width)), Image.LANCZOS)
    img = img.convert("RGB").quantize(256)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def cut(text: str, max_lines: int = MAX_LINES) -> str:
    lines = text.splitlines(keepends=True)
    if len(lines) <= max_lines:
        return text
    head, tail = lines[:max_lines - 5], lines[-4:]
    return "".join(head) + f"... ({len(lines) - len(head) - len(tail)} lines left out)\n" + "".join(tail)


def _drop_warnings(lines: list[str]) -> list[str]:
    """Lines without Python warnings ("path.py:12: SomeWarning: ..." and the indented source line after it):
    library warnings about the local install are noise to a reader and leak local paths."""
    out, skipping = [], False
    for line in lines:
        if re.match(r"^\S+\.py:\d+: \w*Warning", line):
            skipping = True
        elif not (skipping and line.startswith("  ")):
            skipping = False
            out.append(line)
    return out


def shrink(nb) -> None:
    """Make ``nb``'s outputs small in place."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        kept = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                # progress bars redraw with \r; keep the last state of each line, drop bars and noise
                text = "\n".join(line.rsplit("\r", 1)[-1] for line in out.text.split("\n"))
                text = "\n".join(line for line in _drop_warnings(text.split("\n"))
                                 if not re.search(r"\d+%\|.*\|", line) and "Loading weights" not in line)
                if not text.strip():
                    continue
                out.text = cut(text)
            elif out.output_type in ("execute_result", "display_data"):
                data = out.data
                if "image/png" in data:
                    data["image/png"] = shrink_png(data["image/png"])
                if "text/html" in data and len(data["text/html"]) > MAX_HTML:
                    del data["text/html"]
                if "text/plain" in data:
                    data["text/plain"] = cut(data["text/plain"])
            kept.append(out)
        cell.outputs = kept


def execute(path: Path, timeout: int = 1800) -> float:
    """Run ``path`` top to bottom, shrink its outputs and write it back atomically; return the seconds taken."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
    shrink(nb)
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", help="names or paths (default: every notebook here)")
    p.add_argument("--shrink-only", action="store_true", help="shrink the committed outputs, run nothing")
    args = p.parse_args(argv)
    paths = [Path(n) if Path(n).exists() else HERE / n for n in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        if args.shrink_only:
            nb = nbformat.read(path, as_version=4)
            shrink(nb)
            nbformat.write(nb, path)
            continue
        seconds = execute(path)
        print(f"{path.name}: {seconds:.0f} s, {path.stat().st_size / 1024:.0f} kB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
