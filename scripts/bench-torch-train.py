#!/usr/bin/env python3
"""PyTorch / Hugging Face reference for the training-step benchmark (docs/cuda.md, "Reference benchmarks (PyTorch)").

A whole training step of a small Llama (12 layers, hidden 768, 12 query / 4 KV heads, head_dim 64, intermediate 2048,
vocab 32000, rope theta 500000, untied embeddings) in transformers with attn_implementation="sdpa", bf16 weights
(and so bf16 grads and AdamW state), torch.optim.AdamW(fused=True):
    loss = model(input_ids=ids, labels=ids).loss; loss.backward(); clip_grad_norm_(params, 1.0); opt.step();
    opt.zero_grad(set_to_none=True)
Random token ids, rotated over --rotate batches. Median step time (CUDA events) over --steps steps after --warmup.
FLOPs per step = 6 * N * tokens + 12 * layers * heads * head_dim * seq^2 / 2 * batch
    N = parameters less the input embedding (the LM head is counted); the attention term is fwd (4 * pairs * d per
    head, pairs = seq^2 / 2 causal) times 3 (fwd + bwd = 1 + 2, the 6N convention).
MFU = FLOPs per step / step time / 989e12 (H200 datasheet dense bf16); also shown against the 767e12 measured ceiling.
--compile adds torch.compile(model) rows, run in a child process killed after --compile-timeout seconds.
"""
import argparse, gc, json, os, signal, statistics, subprocess, sys, tempfile, time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

PEAK, PEAK_MEASURED = 989e12, 767e12
LAYERS, HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 12, 768, 12, 4, 2048, 32000


def make_model(max_len, dev):
    theta = 500000.0
    if int(transformers.__version__.split(".")[0]) >= 5:  # 5.x: rope_parameters; 4.x: rope_theta
        rope = {"rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    else:
        rope = {"rope_theta": theta}
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=max_len,
                      tie_word_embeddings=False, use_cache=False, **rope)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(device=dev, dtype=torch.bfloat16).train()


def run_shape(seq, batch, compiled, args, dev):
    rec = {"mode": "compiled" if compiled else "eager", "seq": seq, "batch": batch, "tokens_per_step": seq * batch,
           "ms": None, "note": ""}
    model = opt = batches = None
    try:
        model = make_model(seq, dev)
        rec["attn_implementation"] = getattr(model.config, "_attn_implementation", "?")
        n_total = sum(p.numel() for p in model.parameters())
        n_matmul = n_total - model.get_input_embeddings().weight.numel()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        fwd = torch.compile(model, dynamic=False) if compiled else model
        batches = [torch.randint(0, VOCAB, (batch, seq), device=dev) for _ in range(args.rotate)]

        def step(i):
            ids = batches[i % len(batches)]
            loss = fwd(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        step(0)
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        for i in range(args.warmup):
            step(i + 1)
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for i in range(args.steps):
            e0.record()
            loss = step(i)
            e1.record()
            torch.cuda.synchronize()
            times.append(e0.elapsed_time(e1))
        ms = statistics.median(times)
        head_dim = HIDDEN // HEADS
        dense = 6 * n_matmul * seq * batch
        attn = 12 * LAYERS * HEADS * head_dim * seq * seq / 2 * batch
        flops = dense + attn
        rec.update(ms=ms, ms_min=min(times), ms_max=max(times), tokens_per_s=seq * batch / (ms * 1e-3),
                   tflops=flops / (ms * 1e-3) / 1e12, mfu=flops / (ms * 1e-3) / PEAK,
                   frac_measured_ceiling=flops / (ms * 1e-3) / PEAK_MEASURED, flops_per_step=flops,
                   flops_dense=dense, flops_attention=attn, params_total=n_total, params_matmul=n_matmul,
                   peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30, first_step_s=first,
                   loss=float(loss.item()), steps=args.steps)
    except Exception as e:
        oom = isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
        rec["note"] = "OOM" if oom else f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0][:120]
        if not oom:
            print(f"[{rec['mode']} seq {seq} batch {batch}] {type(e).__name__}: {str(e)[:2000]}", file=sys.stderr)
    model = opt = batches = fwd = step = None
    gc.collect()
    torch.cuda.empty_cache()
    return rec


def print_row(r):
    f = lambda k, fmt: format(r[k], fmt) if r.get(k) is not None else "-"
    print(f"{r['mode']:<9} {r['seq']:>6} {r['batch']:>5} {f('ms', '.2f'):>9} {f('tokens_per_s', ',.0f'):>11} "
          f"{f('tflops', '.1f'):>8} {f('mfu', '.1%'):>9} {f('frac_measured_ceiling', '.1%'):>7} "
          f"{f('peak_mem_gib', '.1f'):>7} {f('first_step_s', '.1f'):>7} {f('loss', '.3f'):>7}  {r['note']}", flush=True)


def write_json(path, meta, rows):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x4,16384x1", help="comma list of SEQxBATCH")
    ap.add_argument("--warmup", type=int, default=3, help="steps after the first (untimed) one")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--rotate", type=int, default=4, help="random batches cycled through")
    ap.add_argument("--compile", action="store_true", help="also torch.compile(model) rows (child process)")
    ap.add_argument("--compile-timeout", type=float, default=150, help="seconds for all compiled rows together")
    ap.add_argument("--json", help="results file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    dev = "cuda"
    shapes = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",")]
    meta = {"torch": torch.__version__, "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(0), "model": dict(layers=LAYERS, hidden=HIDDEN, heads=HEADS,
            kv_heads=KV_HEADS, head_dim=HIDDEN // HEADS, intermediate=FFN, vocab=VOCAB, rope_theta=500000.0,
            tie_word_embeddings=False, dtype="bf16", attn_implementation="sdpa"),
            "flops_formula": "6*N*tokens + 12*layers*heads*head_dim*seq^2/2*batch, N = params less input embedding",
            "peak": PEAK, "peak_measured": PEAK_MEASURED, "args": vars(args)}
    if args.child:  # compiled rows only; the parent reads the JSON, even a partial one
        rows = []
        for seq, batch in shapes:
            rows.append(run_shape(seq, batch, True, args, dev))
            print_row(rows[-1])
            write_json(args.json, meta, rows)
        return 0
    print(f"torch {meta['torch']}, transformers {meta['transformers']}, {meta['device']}; Llama 12L h768 12q/4kv "
          f"heads d64 ffn2048 vocab32000, bf16, sdpa, fused AdamW, clip 1.0")
    print(f"\n{'mode':<9} {'seq':>6} {'batch':>5} {'ms/step':>9} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU(989)':>9} "
          f"{'%767':>7} {'memGiB':>7} {'first s':>7} {'loss':>7}  note", flush=True)
    rows = []
    for seq, batch in shapes:
        rows.append(run_shape(seq, batch, False, args, dev))
        print_row(rows[-1])
        write_json(args.json, meta, rows)
    if args.compile:
        fd, tmp = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--shapes", args.shapes, "--warmup",
               str(args.warmup), "--steps", str(args.steps), "--rotate", str(args.rotate), "--json", tmp]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, start_new_session=True)  # own process group: compile workers die with it
        note = ""
        try:
            proc.wait(timeout=args.compile_timeout)
            if proc.returncode:
                note = f"compile child exited with code {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            note = f"compile child stopped after --compile-timeout {args.compile_timeout:.0f} s"
        try:
            with open(tmp) as fh:
                child_rows = json.load(fh)["rows"]
        except (OSError, ValueError):
            child_rows = []
        os.unlink(tmp)
        done = {(r["seq"], r["batch"]) for r in child_rows}
        for seq, batch in shapes:
            if (seq, batch) not in done:
                child_rows.append({"mode": "compiled", "seq": seq, "batch": batch, "ms": None,
                                   "note": note or "not run"})
        rows += child_rows
        print(f"compiled rows: {time.perf_counter() - t0:.0f} s wall in the child{'; ' + note if note else ''}")
        for r in child_rows:
            print_row(r)
        write_json(args.json, meta, rows)
    print("\nFLOPs/step = 6*N*tokens + 12*layers*heads*head_dim*seq^2/2*batch (N = params less input embedding); "
          "MFU = FLOPs/step / step time / 989e12 (datasheet); %767 = against the 767 TFLOP/s measured ceiling. "
          "first s = wall time of the first step (includes compilation for compiled rows).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
