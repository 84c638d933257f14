#!/bin/bash
# One device check: CPU facts, our kernels on every path (bits + speed), LibTorch's 1-thread float32 GEMM for scale.
lscpu > $OUT/lscpu.txt 2>&1
grep -E 'Model name|^CPU\(s\)|Thread|L1d|L2|L3|NUMA node\(s\)' $OUT/lscpu.txt
grep -o -w -E 'avx512f|avx512_vnni|avx512_bf16|avx_vnni|amx_tile|amx_int8|amx_bf16|avx512vl|avx512bw' $OUT/lscpu.txt | sort -u | tr '\n' ' '; echo
chmod +x .devcheck/kernelcheck
taskset -c 3 .devcheck/kernelcheck avx512,avx2,portable 2>&1 | tee $OUT/kernelcheck.txt
PYTHONUNBUFFERED=1 taskset -c 3 python3 - <<'PY' 2>&1 | tee $OUT/torch.txt
import torch, time
torch.set_num_threads(1)
print("torch", torch.__version__, torch.backends.cpu.get_cpu_capability())
for (m, k, n) in [(1024, 1024, 1024), (16, 512, 2048), (16, 2048, 512), (1, 512, 2048)]:
    a = torch.randn(m, k); b = torch.randn(k, n)
    for _ in range(5): a @ b
    t = time.perf_counter(); r = 0
    while time.perf_counter() - t < 1.0: a @ b; r += 1
    dt = (time.perf_counter() - t) / r
    print(f"torch float32 {m}x{k} @ {k}x{n}: {dt*1e6:.1f} us, {2*m*k*n/dt/1e9:.1f} GFLOP/s (weights cache-resident)")
PY
