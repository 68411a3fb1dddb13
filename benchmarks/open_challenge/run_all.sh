#!/bin/sh
# Train every open-challenge config one after the other on the synthetic city (CPU), then
# score each with `effseg eval`.  Usage (from the repository root):
#   sh benchmarks/open_challenge/run_all.sh [name ...]   # default: all, in the order below
# The distilled student needs the teacher run (pspnet_r18_teacher) to exist.
set -e
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
EFFSEG="${EFFSEG:-effseg}"
NAMES="${*:-pspnet_mbv2 lraspp_mbv3_large_os16 pspnet_r18_teacher lraspp_mbv3_large_os16_kd lraspp_mbv3_large_os16_bnm001 lraspp_mbv3_large_project}"
mkdir -p runs/oc
for name in $NAMES; do
    echo "== $name"
    $EFFSEG train "configs/synthetic/open_challenge/$name.yaml" --run-dir "runs/oc/$name" --force
    $EFFSEG eval "runs/oc/$name" > "runs/oc/$name.eval.txt"
    tail -n 3 "runs/oc/$name.eval.txt"
done
