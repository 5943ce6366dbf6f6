#!/usr/bin/env bash
# The XCryoNet Table 1 protocol at CPU scale (2 shared cores, one torch thread).
# Data: 8 simulated atlases, extracted (benchmarks/make_screening_data.py).
# Usage: benchmarks/table1.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
DATA=${1:-/tmp/h4/data}
OUT=${2:-/tmp/h4/table1}
if [ ! -f "$DATA/atlas07/labels.csv" ]; then
    python benchmarks/make_screening_data.py -o "$DATA" --atlases 8 --seed 0 --size 128
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
/usr/bin/time -v cryoscout benchmark table1 "$DATA"/atlas0* -o "$OUT" \
    --size 32 --epochs ${EPOCHS:-8} --runs 2 --labeled 100,500,900 --unlabeled 1500 --seed 0
