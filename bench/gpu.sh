#!/usr/bin/env bash
# Issue 6's GPU check, prepared to run in one call on the lent device machine (bench/README.md,
# "On a GPU"): DPA-1 L=0, float64, plain and compressed, JAX .hlo, at SIZES atoms.
#
#   bash bench/gpu.sh            # from the repository root; logs and tables go to $OUT
#
# Each model is frozen three times (chunk sizes shape the program at freeze time):
#   default    as `polypot freeze` does: chunks on CPUs, the whole system at once on GPUs
#   gpuchunks  POLYPOT_GPU_CHUNKS=1: the CPU chunks on the GPU too (every .hlo before 1a7f6f5)
#   reference  POLYPOT_NO_KERNELS=1: the model's reference code, no JAX kernels
# then: a 192-atom check of every file against the NumPy reference (.dp), bench/alternate.py
# (alternated calls, neighbour list and model timed apart) at each size, the harness
# bench/md_step.py (default freezes) and bench/md.py (ASE MD steps, Verlet list). Python
# packages the machine's image lacks are installed from .whl/ when that folder is present.
set -uo pipefail
OUT=${OUT:-/tmp/polypot-gpu}
WORK=${WORK:-/tmp/polypot-gpu-work}
PY=${PY:-python3}
SIZES=${SIZES:-"1536 12288"}
STEP_S=${STEP_S:-240}
mkdir -p "$OUT" "$WORK"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log() { echo "== $(date +%T) $*"; }

log machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
echo "cpus: $(nproc)"
"$PY" -c "import jax, numpy; print('jax', jax.__version__, 'numpy', numpy.__version__, \
'backend', jax.default_backend(), jax.devices())" || exit 1

log models
"$PY" - "$WORK" <<'EOF' || exit 1
import sys
from pathlib import Path

from md_step import compress, write_dp

work = Path(sys.argv[1])
write_dp("dpa1_l0", "float64", work / "l0.dp")
why = compress(work / "l0.dp", work / "l0c.dp")
if why:
    sys.exit(why)
EOF
declare -A VARIANT=(
    [default]=""
    [gpuchunks]="POLYPOT_GPU_CHUNKS=1"
    [reference]="POLYPOT_NO_KERNELS=1"
)
for m in l0 l0c; do
    for v in default gpuchunks reference; do
        env ${VARIANT[$v]} "$PY" -m polypot.cli.main convert-backend "$WORK/$m.dp" \
            "$WORK/${m}_$v.hlo" || exit 1
    done
done

log "check: 192 atoms, every file against the NumPy reference"
for m in l0 l0c; do
    timeout "$STEP_S" "$PY" bench/alternate.py --natoms 192 --repeats 2 "$WORK/$m.dp" \
        "$WORK/${m}_default.hlo" "$WORK/${m}_gpuchunks.hlo" "$WORK/${m}_reference.hlo" \
        | tee -a "$OUT/check.md" || exit 1
done

for n in $SIZES; do
    log "alternate.py, $n atoms"
    timeout "$STEP_S" "$PY" bench/alternate.py --natoms "$n" --repeats 5 --split \
        "$WORK"/l0_{default,gpuchunks,reference}.hlo "$WORK"/l0c_{default,gpuchunks,reference}.hlo \
        | tee -a "$OUT/alternate.md"
done

log "md_step.py"
timeout "$STEP_S" "$PY" bench/md_step.py --backends jax --models dpa1_l0 --precisions float64 \
    --sizes $SIZES --compressed --threads "$(nproc)" --repeats 5 --warmup 2 \
    --workdir "$WORK/md" --csv "$OUT/md_step.csv" --png "$OUT/md_step.png" | tee -a "$OUT/md_step.md"
log "md.py: ASE velocity Verlet through the calculator (its Verlet list, skin 1 A)"
timeout "$STEP_S" "$PY" bench/md.py --backends jax --model-size dpa1_l0 --sizes $SIZES \
    --steps 20 --warmup 3 --threads "$(nproc)" --csv "$OUT/md.csv" | tee -a "$OUT/md.md"
log done
