#!/usr/bin/env bash
# Nsight Compute shared-memory and tensor-pipe counters of the MLP products, each library's H200-tuned choices
# (h200_cutlass_pipelined.json, h200_sparse_speed_v7.json) against cuBLAS; writes OUT/<product>.csv, prints the table.
#   OUT=dir WANDAPP_CUTLASS_SPARSE=lib.so bash benchmarks/kernels/ncu_smem_h200.sh
set -u
OUT=${OUT:?set OUT to a folder}
export PYTHONUNBUFFERED=1  # run from the repository root: the scripts are modules of benchmarks.kernels
M=$(python3 -m benchmarks.kernels.ncu_table --print-metrics)
p() { /usr/local/cuda/bin/ncu --clock-control none --profile-from-start off --metrics $M --csv --page raw python3 -m benchmarks.kernels.profile_products --shape $1 --tokens $2 --cutlass $3 --cslt $4 > $OUT/$5.csv 2>$OUT/$5.err; echo "$5 rc=$?"; }
p 22016,4096 2048 cutlass/128x256x64_c2x1_coop/swizzle8/along_n,cutlass/128x256x64_c1x1_coop/swizzle2/along_m 25,1,sparseA+y_t+col gateup_2048
p 22016,4096 8192 cutlass/128x256x64_c2x1_coop/swizzle8/along_m,cutlass/128x256x64_c1x1_coop/swizzle2/along_m 25,1,sparseA+y_t gateup_8192
p 4096,11008 2048 cutlass/128x256x64_c2x1_coop/swizzle2/along_m,cutlass/128x256x64_c1x1_coop/swizzle1/along_m 37,1,sparseA+x_t+y_t down_2048
p 4096,11008 8192 cutlass/128x256x64_c2x1_coop/swizzle8/along_n,cutlass/128x256x64_c1x1_coop/swizzle2/along_m 37,1,sparseA+x_t+y_t down_8192
python3 -m benchmarks.kernels.ncu_table $OUT/*.csv
