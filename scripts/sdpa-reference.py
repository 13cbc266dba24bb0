#!/usr/bin/env python3
"""External reference for the CUDA decode attention (run on the GPU machine by scripts/device-run.sh).

1. Cross-check: loads the full-attention case written by `bench-decode-attention --dump DIR` (bf16 q/k/v, our
   f32 out and lse) and compares ours and torch SDPA's against a float64 reference on the same bf16 inputs.
2. Timing: torch.nn.functional.scaled_dot_product_attention for the full decode step (one query row, GQA via
   enable_gqa) at the bench's shapes (--long: those of `bench-decode-attention --bench-long`), bf16, rotating over K/V copies (>= 512 MiB) so L2 does not serve repeats;
   median of 7 timed loops, per call, CUDA events.
"""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F


def cross_check(d):
    B, Hq, Hkv, D, L = 2, 32, 8, 128, 4096
    def bf16(name, shape):
        raw = np.fromfile(f"{d}/{name}", dtype=np.uint16).astype(np.uint32) << 16
        return torch.from_numpy(raw.view(np.float32).reshape(shape).copy())
    q = bf16("q.bin", (B, Hq, D))
    k = bf16("k.bin", (B, L, Hkv, D))
    v = bf16("v.bin", (B, L, Hkv, D))
    ours = torch.from_numpy(np.fromfile(f"{d}/out.bin", dtype=np.float32).reshape(B, Hq, D))
    ours_lse = torch.from_numpy(np.fromfile(f"{d}/lse.bin", dtype=np.float32).reshape(B, Hq))
    # float64 reference
    G = Hq // Hkv
    kk = k.double().permute(0, 2, 1, 3).repeat_interleave(G, dim=1)  # B, Hq, L, D
    vv = v.double().permute(0, 2, 1, 3).repeat_interleave(G, dim=1)
    s = torch.einsum("bhd,bhld->bhl", q.double(), kk) / math.sqrt(D)
    ref_lse = torch.logsumexp(s, dim=-1)
    ref = torch.einsum("bhl,bhld->bhd", torch.softmax(s, dim=-1), vv)
    rel = lambda x: ((x.double() - ref).norm() / ref.norm()).item()
    # torch SDPA on the GPU, bf16 inputs (its own output is bf16)
    dev = "cuda"
    qt = q.to(dev, torch.bfloat16).unsqueeze(2)                       # B, Hq, 1, D
    kt = k.to(dev, torch.bfloat16).permute(0, 2, 1, 3).contiguous()   # B, Hkv, L, D
    vt = v.to(dev, torch.bfloat16).permute(0, 2, 1, 3).contiguous()
    sd = F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True).squeeze(2).float().cpu()
    sd32 = F.scaled_dot_product_attention(qt.float(), kt.float(), vt.float(), enable_gqa=True).squeeze(2).cpu()
    print(f"cross-check B={B} Hq={Hq} Hkv={Hkv} D={D} L={L}: rel-L2 vs float64 reference: ours(f32 out) "
          f"{rel(ours):.2e}, torch SDPA bf16 {rel(sd):.2e}, torch SDPA f32 {rel(sd32):.2e}; "
          f"ours vs SDPA f32 {((ours - sd32).norm() / sd32.norm()).item():.2e}; "
          f"lse max abs err {(ours_lse.double() - ref_lse).abs().max().item():.2e}")
    return rel(ours) < 1e-4


def time_sdpa(B, Hq, Hkv, D, L, reps=7):
    dev = "cuda"
    copy_bytes = B * Hkv * L * D * 2 * 2
    copies = max(1, min(64, (512 << 20) // copy_bytes + 1))
    q = torch.randn(B, Hq, 1, D, device=dev, dtype=torch.bfloat16)
    ks = [torch.randn(B, Hkv, L, D, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
    vs = [torch.randn(B, Hkv, L, D, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
    iters = max(copies, 20)
    for i in range(3):
        F.scaled_dot_product_attention(q, ks[i % copies], vs[i % copies], enable_gqa=True)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for i in range(iters):
            F.scaled_dot_product_attention(q, ks[i % copies], vs[i % copies], enable_gqa=True)
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) / iters * 1000.0)
    del ks, vs
    torch.cuda.empty_cache()
    us = sorted(times)[len(times) // 2]
    return us, B * Hkv * L * D * 2 * 2 / (us * 1e-6) / 1e9


def main():
    print("torch", torch.__version__, torch.cuda.get_device_name(0))
    ok = True
    args = sys.argv[1:]
    long_cells = "--long" in args  # bench-decode-attention --bench-long's cells instead of --bench's
    args = [a for a in args if a != "--long"]
    if args:
        ok = cross_check(args[0])
    print(f"\n{'shape':14s} {'L':>7s} | {'sdpa us':>9s} {'GB/s':>8s}")
    if long_cells:
        shapes = [("llama3.2-1b", 1, 32, 8, 64), ("qwen2-7b", 1, 28, 4, 128)]
        lengths = (4096, 32768, 131072, 524288, 1048576)
    else:
        shapes = [("8q/2kv B1", 1, 8, 2, 128), ("llama3-8b B1", 1, 32, 8, 128), ("llama3-8b B8", 8, 32, 8, 128)]
        lengths = (4096, 16384, 65536, 131072)
    for name, B, Hq, Hkv, D in shapes:
        for L in lengths:
            try:
                us, gbs = time_sdpa(B, Hq, Hkv, D, L)
                print(f"{name:14s} {L:7d} | {us:9.2f} {gbs:8.1f}", flush=True)
            except Exception as e:  # keep timing the other shapes
                print(f"{name:14s} {L:7d} | failed: {e}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
