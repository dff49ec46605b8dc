#!/usr/bin/env bash
# Build llama-cpp-python (a source distribution only) into a wheel once, cache it outside the clone, and
# install it into the active environment. Called from .ci/run after the venv is active:
#   bash .ci/llamacpp.sh
# SAS_WHEEL_CACHE moves the cache (default ~/.cache/sas-wheels); a later run on the same machine reuses
# the wheel and skips the ~3.5 min build.
set -euo pipefail
version=0.3.36
cache=${SAS_WHEEL_CACHE:-$HOME/.cache/sas-wheels}
mkdir -p "$cache"
# The default native build segfaults on this CPU (it advertises AMX and AVX-512): build for AVX2 only.
# The flags are part of the cache key so that a wheel built with other flags is never reused.
flags="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
key=$(printf '%s %s %s' "$version" "$flags" "$(python -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-12)
dir="$cache/llama-cpp-python-$version-$key"
if ! ls "$dir"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    start=$(date +%s)
    tmp=$(mktemp -d "$cache/.build.XXXXXX")  # build into a temporary folder, then rename: never a half wheel
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
        pip wheel -qq --no-deps -w "$tmp" "llama-cpp-python==$version"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    echo "llamacpp: built the wheel in $(( $(date +%s) - start )) s into $dir"
fi
pip install -qq --no-deps "$dir"/llama_cpp_python-"$version"-*.whl
# Its runtime dependencies (numpy, typing-extensions, diskcache, jinja2); --no-deps above keeps pip from
# rebuilding the sdist.
pip install -qq "numpy>=1.20" "typing-extensions>=4.5" "diskcache>=5.6.1" "jinja2>=2.11.3"
python -c "import llama_cpp; print('llamacpp: llama_cpp', llama_cpp.__version__)"
