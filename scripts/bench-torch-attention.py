#!/usr/bin/env python3
"""PyTorch reference for the GSA attention benchmarks (docs/cuda.md, "Reference benchmarks (PyTorch)"): one
attention layer, forward + backward, bf16, batch 1, d 128, heads 16/16 and 16/4. Rows per raw length L: sdpa-flash
(and sdpa-cudnn) causal on L; compiled FlexAttention with a causal mask on L (flex-causal), with the gist mask
(DESIGN 1.2, compress mode) on the GSA stream of n = L + L/c*g tokens (flex-stream), and on the same n tokens
permuted so that all gists follow all raw tokens (flex-gistlast: the same problem, block-sparse for Flex).
useful TFLOP/s = 4 * pairs * d * Hq * (1 fwd + 2.5 bwd) / time, pairs = visible (q, k) pairs per head.
"""
import argparse, gc, json, math, os, statistics, sys, time

import torch
import torch._dynamo
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

PEAK, BWD, D = 767e12, 2.5, 128  # BWD = backward / forward FLOPs (FlashAttention convention: 5 matmuls vs 2)
_C = _G = _S = _LOC = _SINK = _L = None  # gist-mask parameters: 0-d int32 device tensors, changed in place
FLEX = {}  # "dyn": torch.compile(flex_attention) per --dynamic; "static": dynamic=False fallback
is_oom = lambda e: isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


class Skip(Exception):
    pass


def set_params(L, c, g, local, sink):
    for t, v in ((_C, c), (_G, g), (_S, c + g), (_LOC, local), (_SINK, sink), (_L, L)):
        t.fill_(v)


def mask_causal(b, h, q_idx, kv_idx):
    return kv_idx <= q_idx


def mask_stream(b, h, q_idx, kv_idx):
    """Stream layout: chunk m = raw [m*S, m*S + c), then its g gists; S = c + g."""
    mq, mk = q_idx // _S, kv_idx // _S
    rk = kv_idx - mk * _S
    vis = (rk >= _C) | (mk >= mq - _LOC) | (mk * _C + rk < _SINK)  # gist | own + local chunks | sink raw
    return (kv_idx <= q_idx) & vis


def mask_gistlast(b, h, q_idx, kv_idx):
    """Permuted layout: [0, L) = raw token t, [L, n) = gist j (of chunk j // g); causality in stream order."""
    q_raw, k_raw = q_idx < _L, kv_idx < _L
    mq = torch.where(q_raw, q_idx // _C, (q_idx - _L) // _G)
    mk = torch.where(k_raw, kv_idx // _C, (kv_idx - _L) // _G)
    oq = torch.where(q_raw, mq * _S + q_idx - mq * _C, mq * _S + _C + (q_idx - _L) - mq * _G)
    ok = torch.where(k_raw, mk * _S + kv_idx - mk * _C, mk * _S + _C + (kv_idx - _L) - mk * _G)
    return (ok <= oq) & (~k_raw | (mk >= mq - _LOC) | (kv_idx < _SINK))


def gist_pairs(L, c, g, local, sink):
    """Closed form of the visible pairs per head (one level, L % c == 0)."""
    S, total = c + g, 0
    for m in range(L // c):
        loc = min(m, local)
        far = m - loc  # earlier chunks seen only through their gists (and the sink)
        total += S * (S + 1) // 2 + S * (loc * S + far * g + (min(sink, far * c) if far > 0 else 0))
    return total


def full_mask(fn, n, dev):
    i = torch.arange(n, device=dev, dtype=torch.int32)
    z = torch.zeros((), device=dev, dtype=torch.int32)
    return fn(z, z, i[:, None], i[None, :])


def self_test(dev, local, sink):
    """Mask functions vs an independent reading of DESIGN 1.2 (Python loops) and vs the closed form."""
    msgs, ok = [], True
    for c, g in ((16, 1), (64, 4), (8, 2)):
        L = 8 * c if c > 32 else 256
        S, n = c + g, L // c * (c + g)
        info = [(i // S, i % S >= c, (i // S) * c + i % S) for i in range(n)]  # chunk, is gist, raw index
        ref = torch.tensor([[k <= q and (info[k][0] == info[q][0] or info[k][1] or info[q][0] - local <= info[k][0]
                              < info[q][0] or info[k][2] < sink) for k in range(n)] for q in range(n)])
        set_params(L, c, g, local, sink)
        perm = torch.tensor([t // c * S + t % c for t in range(L)] + [j // g * S + c + j % g for j in range(n - L)])
        good = (torch.equal(full_mask(mask_stream, n, dev).cpu(), ref)
                and torch.equal(full_mask(mask_gistlast, n, dev).cpu(), ref[perm][:, perm])
                and int(ref.sum()) == gist_pairs(L, c, g, local, sink))
        ok &= good
        msgs.append(f"c={c},g={g}: {'ok' if good else 'MISMATCH'}")
    return ok, "mask self-test vs DESIGN 1.2 reading: " + ", ".join(msgs)


def build_block_mask(fn, n, dev, block=128):
    """Exact block mask: fn on every (q, k), in row slabs (never n x n), 128x128 blocks split into full / partial.
    Returns (BlockMask, exact visible pairs, computed blocks, all blocks)."""
    nb = -(-n // block)
    npad = nb * block
    kv = torch.arange(npad, device=dev, dtype=torch.int32)[None, :]
    z = torch.zeros((), device=dev, dtype=torch.int32)
    rows = max(block, (1 << 28) // npad // block * block)
    cnt = torch.empty(nb, nb, dtype=torch.int64, device=dev)
    for r0 in range(0, npad, rows):
        q = torch.arange(r0, min(npad, r0 + rows), device=dev, dtype=torch.int32)[:, None]
        m = fn(z, z, q, kv) & (kv < n) & (q < n)
        cnt[r0 // block: r0 // block + q.shape[0] // block] = m.view(-1, block, nb, block).sum(dim=(1, 3))
    full = cnt == block * block

    def ordered(x):
        idx = torch.argsort(x.to(torch.int32), dim=-1, descending=True, stable=True)
        return x.sum(-1).to(torch.int32)[None, None].contiguous(), idx.to(torch.int32)[None, None].contiguous()
    bm = BlockMask.from_kv_blocks(*ordered((cnt > 0) & ~full), *ordered(full), BLOCK_SIZE=block, mask_mod=fn,
                                  seq_lengths=(n, n))
    return bm, int(cnt.sum()), int((cnt > 0).sum()), nb * nb


def check_vs_create_block_mask(dev, local, sink, L=2048):
    set_params(L, 16, 1, local, sink)
    n = L // 16 * 17
    mine = build_block_mask(mask_stream, n, dev)[0]
    ref = create_block_mask(mask_stream, None, None, n, n, device=dev)
    same = (torch.equal(mine.to_dense().bool(), ref.to_dense().bool())
            and int(mine.full_kv_num_blocks.sum()) == int(ref.full_kv_num_blocks.sum()))
    return f"block-mask builder vs create_block_mask (n={n}, c=16, g=1): {'same' if same else 'DIFFERENT'}"


def make_sets(hq, hkv, n, dev, count):
    mk = lambda h, rg=True: torch.randn(1, h, n, D, device=dev, dtype=torch.bfloat16, requires_grad=rg)
    return [(mk(hq), mk(hkv), mk(hkv), mk(hq, False)) for _ in range(count)]


def sdpa_step(sets, backend, repeat_kv):
    def step(i):
        q, k, v, do = sets[i % len(sets)]
        r = q.shape[1] // k.shape[1]
        with sdpa_kernel([backend]):
            if repeat_kv:
                out = F.scaled_dot_product_attention(q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1),
                                                     is_causal=True)
            else:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=r > 1)
            torch.autograd.grad(out, (q, k, v), do)
    return step


def _flex_static(*a, **kw):  # own code object: its compile cache is separate from FLEX["dyn"]'s
    return flex_attention(*a, **kw)


def flex_step(sets, bm, which):
    def step(i):
        q, k, v, do = sets[i % len(sets)]
        out = FLEX[which](q, k, v, block_mask=bm, enable_gqa=q.shape[1] != k.shape[1])
        torch.autograd.grad(out, (q, k, v), do)
    return step


def bench(step, args):
    """First call (compile) untimed; one timed call sizes the loop; warm-up; median of reps (CUDA events)."""
    t0 = time.perf_counter()
    step(0)
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record(); step(1); e1.record(); torch.cuda.synchronize()
    one = e0.elapsed_time(e1) / 1e3
    if one > args.max_seconds:
        return one * 1e3, first, 1, "one call > --max-seconds: single sample"
    inner = max(1, min(20, int(0.02 / max(one, 1e-6))))  # >= ~20 ms between events
    budget = args.max_seconds / (one * inner)  # loops that fit; the two calls above already warmed up
    warm = 0 if budget < args.warmup + 3 else args.warmup
    reps = max(1, min(args.reps, int(budget) - warm))
    for i in range(warm * inner):
        step(i)
    times, k = [], 0
    for _ in range(reps):
        e0.record()
        for _ in range(inner):
            step(k); k += 1
        e1.record(); torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) / inner)
    return statistics.median(times), first, reps, (f"reps cut to {reps} by --max-seconds" if reps < args.reps else "")


def dump(path, dev, local, sink, L=2048):
    """Goldens for the C++ kernels: bf16 q/k/v/dout, flash out/grads, float32 reference out/lse/grads."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = torch.Generator(device=dev).manual_seed(1234)
    rnd = lambda h, n: torch.randn(1, h, n, D, device=dev, generator=gen).to(torch.bfloat16)

    def reference(q, k, v, do, mask):  # float32 math on the bf16 values, explicit mask, GQA by repeat_interleave
        r = q.shape[1] // k.shape[1]
        q, k, v = (x.float().requires_grad_() for x in (q, k, v))
        s = (q @ k.repeat_interleave(r, 1).transpose(-1, -2) / math.sqrt(D)).masked_fill(~mask, float("-inf"))
        out = torch.softmax(s, -1) @ v.repeat_interleave(r, 1)
        return dict(zip(["out_f32", "lse_f32", "dq_f32", "dk_f32", "dv_f32"],
                        [out, torch.logsumexp(s, -1), *torch.autograd.grad(out, (q, k, v), do.float())]))
    meta = {"layout": "q/k/v/dout/out/d* (tokens, heads, d), lse (tokens, heads) as src/backend/cuda/attention.h; "
                      "scale 1/sqrt(d); *_f32: float32 math on the bf16 inputs; lse natural log; GQA: query head h "
                      "uses kv head h // (hq / hkv); mask (query, key), 1 = visible", "d": str(D)}
    lay = lambda x: (x[0].transpose(0, 1) if x.dim() in (3, 4) else x).detach().contiguous().cpu()
    c, g = 16, 1
    n = L // c * (c + g)
    set_params(L, c, g, local, sink)
    cases = [("sdpa-mha", 16, 16, L, None), ("sdpa-gqa", 16, 4, L, None),
             (f"gist-c{c}g{g}-gqa", 16, 4, n, full_mask(mask_stream, n, dev))]
    for tag, hq, hkv, m, mask in cases:
        q, k, v, do = rnd(hq, m), rnd(hkv, m), rnd(hkv, m), rnd(hq, m)
        t = {"q": q, "k": k, "v": v, "dout": do}
        t.update(reference(q, k, v, do, torch.ones(m, m, dtype=torch.bool, device=dev).tril() if mask is None else mask))
        if mask is None:
            qb, kb, vb = (x.clone().requires_grad_() for x in (q, k, v))
            try:
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=hq != hkv)
                    t.update(zip(["out_flash", "dq_flash", "dk_flash", "dv_flash"],
                                 [out, *torch.autograd.grad(out, (qb, kb, vb), do)]))
            except RuntimeError as e:
                print(f"dump {tag}: flash SDPA failed, float32 reference only: {str(e)[:100]}")
            info = "causal"
        else:
            t["mask"] = mask.to(torch.uint8)
            info = f"gist mask, stream layout (raw chunk then its gists), c={c} g={g} local_chunks={local} sink={sink}"
        save_file({a: lay(b) for a, b in t.items()}, f"{path}/{tag}-L{L}.safetensors",
                  metadata=dict(meta, mask=info, L=str(L), n=str(m), hq=str(hq), hkv=str(hkv)))
        print(f"dump: {path}/{tag}-L{L}.safetensors ({', '.join(t)})")


def run_cell(rec, args, masks, sdpa_ms, dev):
    hq, hkv, L, n, row, c, g = (rec[k] for k in ("hq", "hkv", "L", "n", "row", "c", "g"))
    cg = (c, g) if c else None
    dense_pairs, note = L * (L + 1) // 2, ""
    if time.perf_counter() - args.t_start > args.total_seconds:
        raise Skip("skipped: --total-seconds reached")
    if cg and L % c:
        raise Skip("skipped: L % c != 0")
    pairs = computed = dense_pairs
    if row.startswith("flex"):
        if cg:
            set_params(L, c, g, args.local_chunks, args.sink)
        key = (row, L, c, g)
        if key not in masks:
            masks[key] = build_block_mask({"flex-causal": mask_causal, "flex-stream": mask_stream,
                                           "flex-gistlast": mask_gistlast}[row], n, dev)
        bm, pairs, nblk, tot = masks[key]
        if cg and pairs != gist_pairs(L, c, g, args.local_chunks, args.sink):
            note += "PAIR COUNT != closed form; "
        computed = nblk * 128 * 128
        rec.update(blocks_computed=nblk, blocks_total=tot)
    rec["pairs_per_head"] = pairs
    if 4 * computed * D * hq * (1 + BWD) / 150e12 > args.max_seconds:
        raise Skip("skipped: estimated > --max-seconds")
    sets = make_sets(hq, hkv, n, dev, args.rotate)
    if row.startswith("sdpa"):
        be = SDPBackend.FLASH_ATTENTION if row == "sdpa-flash" else SDPBackend.CUDNN_ATTENTION
        try:
            res = bench(sdpa_step(sets, be, False), args)
        except RuntimeError as e:
            if is_oom(e) or hq == hkv:
                raise
            note += "enable_gqa unsupported by this backend: k/v repeated in the timed step; "
            res = bench(sdpa_step(sets, be, True), args)
    else:
        which = "static" if FLEX.get("fallback") else "dyn"
        try:
            res = bench(flex_step(sets, bm, which), args)
        except Exception as e:
            if is_oom(e) or which == "static":
                raise
            FLEX["fallback"] = True
            print(f"[{row} L={L}] compile failed, static-shape fallback: {str(e)[:2000]}", file=sys.stderr)
            note += f"static-shape compile fallback ({type(e).__name__}); "
            res = bench(flex_step(sets, bm, "static"), args)
    ms, first, reps, n2 = res
    tf = 4 * pairs * D * hq * (1 + BWD) / (ms * 1e-3) / 1e12
    rec.update(ms=ms, tflops=tf, pct_peak=100 * tf * 1e12 / PEAK, first_call_s=first, reps=reps,
               ideal_ratio=dense_pairs / pairs, note=note + n2 + (f"; first call {first:.1f} s" if first > 2 else ""))
    if row == "sdpa-flash":
        sdpa_ms[(hq, hkv, L)] = ms
    if (hq, hkv, L) in sdpa_ms:
        rec["speedup_vs_sdpa_flash"] = sdpa_ms[(hq, hkv, L)] / ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="8k,16k,32k,64k,128k", help="raw lengths L (k = 1024)")
    ap.add_argument("--heads", default="16:16,16:4", help="query:kv head pairs")
    ap.add_argument("--configs", default="16:1,64:4", help="gist c:g pairs")
    ap.add_argument("--rows", default="sdpa-flash,flex-stream,flex-gistlast,flex-causal",
                    help="any of sdpa-flash, flex-stream, flex-gistlast, flex-causal, sdpa-cudnn (run in this order)")
    ap.add_argument("--local-chunks", type=int, default=1)
    ap.add_argument("--sink", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rotate", type=int, default=2, help="input sets cycled through")
    ap.add_argument("--max-seconds", type=float, default=8.0, help="per cell: warm-up + timed calls")
    ap.add_argument("--total-seconds", type=float, default=1e9, help="skip the cells left after this wall time")
    ap.add_argument("--dynamic", choices=["auto", "on", "off"], default="auto", help="torch.compile dynamic=None/True/False")
    ap.add_argument("--dump", help="write the L=2048 goldens (safetensors) to this folder")
    ap.add_argument("--json", help="results file (rewritten after every cell)")
    args = ap.parse_args()
    args.t_start, dev = time.perf_counter(), "cuda"
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    global _C, _G, _S, _LOC, _SINK, _L
    _C, _G, _S, _LOC, _SINK, _L = (torch.zeros((), dtype=torch.int32, device=dev) for _ in range(6))
    for name, val in (("recompile_limit", 64), ("cache_size_limit", 64), ("accumulated_recompile_limit", 1024),
                      ("accumulated_cache_size_limit", 1024)):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, val)
    FLEX["dyn"] = torch.compile(flex_attention, dynamic={"auto": None, "on": True, "off": False}[args.dynamic])
    FLEX["static"] = torch.compile(_flex_static, dynamic=False)
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "d": D, "batch": 1, "dtype": "bf16",
            "peak_tflops": PEAK / 1e12, "tflops_formula": "4*pairs*d*Hq*(1+2.5)/ms", "args": dict(vars(args))}
    meta["args"].pop("t_start")
    print(f"torch {meta['torch']} on {meta['device']}: d={D}, batch 1, bf16, fwd+bwd, local_chunks={args.local_chunks}, "
          f"sink={args.sink}; L = raw tokens, n = tokens attended over (stream L + L/c*g for the gist rows)")
    ok, msg = self_test(dev, args.local_chunks, args.sink)
    try:
        msg2 = check_vs_create_block_mask(dev, args.local_chunks, args.sink)
    except Exception as e:  # informative only
        msg2 = f"create_block_mask comparison not run: {type(e).__name__}: {str(e)[:120]}"
    meta["checks"] = [msg, msg2]
    print(msg + "\n" + msg2)
    if args.dump:
        dump(args.dump, dev, args.local_chunks, args.sink)
    lengths = [int(float(s[:-1]) * 1024) if s.lower().endswith("k") else int(s) for s in args.lengths.split(",")]
    heads = [tuple(int(x) for x in s.split(":")) for s in args.heads.split(",")]
    configs = [tuple(int(x) for x in s.split(":")) for s in args.configs.split(",")]
    rows = [r.strip() for r in args.rows.split(",")]
    cells = [(hq, hkv, L, r, cg)
             for prio in ({"sdpa-flash", "flex-stream"}, {"flex-gistlast"}, {"flex-causal", "sdpa-cudnn"})
             for hq, hkv in heads for L in lengths for r in rows if r in prio
             for cg in (configs if r in ("flex-stream", "flex-gistlast") else [None])]
    results, masks, sdpa_ms = [], {}, {}
    print(f"\n{'heads':>6} {'L':>7} {'n':>7} {'row':<14} {'c:g':>5} {'ms':>9} {'pairs/q':>8} {'TFLOP/s':>8} {'%767':>5} "
          f"{'xSDPA':>6} {'ideal':>6} {'blk%':>5}  note", flush=True)
    for hq, hkv, L, row, cg in cells:
        rec = {"hq": hq, "hkv": hkv, "L": L, "n": L // cg[0] * sum(cg) if cg else L, "row": row,
               "c": cg[0] if cg else None, "g": cg[1] if cg else None, "ms": None, "note": ""}
        try:
            run_cell(rec, args, masks, sdpa_ms, dev)
        except Exception as e:
            if not isinstance(e, Skip) and not is_oom(e):
                print(f"[{row} L={L} {hq}/{hkv}] {type(e).__name__}: {str(e)[:2000]}", file=sys.stderr)
            rec["note"] = str(e) if isinstance(e, Skip) else "OOM" if is_oom(e) else \
                f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0][:100]
        gc.collect(); torch.cuda.empty_cache()
        rec["note"] = rec["note"].strip("; ")
        results.append(rec)
        f = lambda k, fmt: format(rec[k], fmt) if rec.get(k) is not None else "-"
        blk = f"{100 * rec['blocks_computed'] / rec['blocks_total']:.1f}" if "blocks_total" in rec else "-"
        ppq = f"{rec['pairs_per_head'] / rec['n']:.1f}" if "pairs_per_head" in rec else "-"
        print(f"{hq:>3}/{hkv:<2} {L:>7} {rec['n']:>7} {row:<14} {(f'{cg[0]}:{cg[1]}' if cg else '-'):>5} "
              f"{f('ms', '.3f'):>9} {ppq:>8} {f('tflops', '.1f'):>8} {f('pct_peak', '.1f'):>5} "
              f"{f('speedup_vs_sdpa_flash', '.2f'):>6} {f('ideal_ratio', '.2f'):>6} {blk:>5}  {rec['note']}", flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"meta": meta, "rows": results}, fh, indent=1)
    print(f"\nms = median fwd+bwd; pairs/q = visible pairs per query row and head; TFLOP/s = useful; xSDPA = sdpa-flash "
          f"ms / row ms at the same L and heads; ideal = dense causal pairs / row pairs; blk% = 128x128 blocks Flex "
          f"computes / all blocks. Wall {time.perf_counter() - args.t_start:.0f} s.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
