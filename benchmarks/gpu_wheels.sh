#!/usr/bin/env bash
# Download the pure-Python wheels that benchmarks/gpu_check.sh needs on a GPU machine with no
# package registry (Python 3.12, x86_64, torch / lightning / numpy / scipy / h5py / matplotlib /
# rich preinstalled): Hydra and OmegaConf (configs of bench_predict, dm2gal.train.build), their
# ANTLR runtime (an sdist on PyPI: built here into a py3-none-any wheel) and PyYAML, tqdm
# (dm2gal.infer.predict) and pytest (the GPU tests), each with its dependencies. Run it where PyPI
# is reachable; the versions are those installed in this Python environment when it has them
# (the ones the test suite ran with).
#
#     bash benchmarks/gpu_wheels.sh [DIR]          # default benchmarks/gpu_wheels/ (git-ignored)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$ROOT/benchmarks/gpu_wheels}"
PYTHON="${PYTHON:-python}"
PACKAGES=(hydra-core omegaconf antlr4-python3-runtime PyYAML tqdm pytest)

pinned() {  # "name==version" when this environment has the package, else "name"
    "$PYTHON" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
}

mapfile -t REQS < <(pinned "${PACKAGES[@]}")
STAGE="$(mktemp -d "$(dirname "$DIR")/.gpu_wheels.XXXXXX")"  # renamed onto DIR on success
trap 'rm -rf "$STAGE"' EXIT

# hydra-core 1.3 needs antlr4-python3-runtime 4.9.*, published as an sdist only
ANTLR="$(printf '%s\n' "${REQS[@]}" | grep '^antlr4-python3-runtime')"
[[ "$ANTLR" == *==* ]] || ANTLR="antlr4-python3-runtime==4.9.3"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$STAGE" "$ANTLR"
"$PYTHON" -m pip download --quiet --dest "$STAGE" --find-links "$STAGE" \
    --python-version 3.12 --platform manylinux2014_x86_64 --only-binary=:all: "${REQS[@]}"

rm -rf "$DIR"
mv "$STAGE" "$DIR"
trap - EXIT
ls -1 "$DIR"
echo "$(find "$DIR" -name '*.whl' | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR"
