#!/bin/sh
# Train every open-challenge config one after the other on the synthetic city (CPU), then
# score each with `effseg eval`.  Usage (from the repository root):
#   sh benchmarks/open_challenge/run_all.sh [name ...]   # default: all, in the order below
# The distilled students need the teacher run (pspnet_r50_teacher) first: keep the order.
set -e
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # no spin-waiting when the cores are shared
EFFSEG="${EFFSEG:-effseg}"
NAMES="${*:-pspnet_mbv2 lraspp_mbv3_large_os16 lraspp_mbv3_large_os16_bnm001 lraspp_mbv3_large_project \
lraspp_mbv3_large_os8_bnm lraspp_mbv3_small_os16 lraspp_mbv3_large_os16_rt pspnet_r50_teacher \
lraspp_mbv3_large_os16_kd_r50 lraspp_mbv3_large_os16_cwd_r50 pspnet_mbv2_kd_r50}"
mkdir -p runs/oc
for name in $NAMES; do
    echo "== $name"
    $EFFSEG train "configs/synthetic/open_challenge/$name.yaml" --run-dir "runs/oc/$name" --force
    $EFFSEG eval "runs/oc/$name" > "runs/oc/$name.eval.txt"
    tail -n 3 "runs/oc/$name.eval.txt"
done
