#!/usr/bin/env python3
"""Whole-model decode of a randomly initialised Llama-3.2-1B-shaped model: Hugging Face transformers against gsa
(issue 14 item 5; docs/decode.md, "Whole-model decode against transformers").

transformers: LlamaForCausalLM (16 layers, hidden 2048, 32 query / 8 KV heads of 64, MLP 8192, vocab 128256, tied
embeddings, rope theta 500000), random weights in bf16, attn_implementation "sdpa", a StaticCache of
context + warmup + steps + 1 positions. No prefill: one decode step at position 0 allocates the cache, then
positions [0, context) of every layer's keys and values are overwritten with standard normal values (bf16), and
decoding starts at position `context` (cache_position = position_ids = context + i). The greedy token of each step
is the next step's input, so nothing leaves the GPU between steps. ms/token = median over --steps steps after
--warmup steps, each timed with torch.cuda.synchronize() before and after (a step decodes one token for each of the
`batch` sequences; tokens/s = batch * 1000 / ms).

gsa (with --gsa BIN): `BIN bench decode --preset llama1b --device cuda --precision bf16 --batch B --context L
--method M --steps N --json` per cell (the same shape; the cache is filled with random keys and values by
session::fill_random, also without a prefill).

Bandwidth limit of a cell: bytes read per step / 4.2e12 B/s (H200 HBM3e). transformers: every weight once (the
tied embedding once, as the LM head) + the K and V of `context` positions in all layers for every sequence, bf16.
gsa: every weight once per batched step + the bytes its step reports reading (K/V rows attended, gist keys scored,
page summaries), counted by gsa in the bytes they are stored in (bf16 pool rows, f32 page summaries).

--prefill: prefill instead of decode, batch 1: transformers runs the base model (LlamaModel, no LM head, no cache)
over `context` random token ids, median of --steps runs after one untimed run, each between two
torch.cuda.synchronize(); gsa runs `BIN bench decode --preset llama1b --prefill --steps 1 --method M` (the session's
prefill of random token ids, synchronised: K/V into its paged cache, the last row's logits; full = dense causal
attention, gsa = the gist mask with the gists inserted). Records {"impl", "context", "prefill_ms",
"prefill_tokens_per_s"}.

Output: one JSON line per cell, {"impl", "batch", "context", "ms_per_token", "tokens_per_s", "gpu_mem_gib",
"bytes_per_step", "limit_ms", "x_limit"} (x_limit = ms_per_token / limit_ms); a cell that does not fit in GPU memory
(or that gsa could not run) gives {"impl", "batch", "context", "skipped": why} instead. The first line is {"meta": ...}.
gpu_mem_gib: transformers, torch.cuda.max_memory_allocated() during the cell (weights + cache + activations); gsa,
the bytes its allocator held after the steps.
"""
import argparse, gc, json, statistics, subprocess, sys, time

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB = 16, 2048, 32, 8, 64, 8192, 128256
BANDWIDTH = 4.2e12  # B/s
KV_BYTES_PER_TOKEN = LAYERS * 2 * KV_HEADS * HEAD_DIM * 2  # K and V, bf16: 32 KiB


def parse_lengths(s):
    """'4k,32k,1m' -> [4096, 32768, 1048576] (k = 1024, m = 1024^2, as gsa's --context)."""
    out = []
    for item in s.split(","):
        item = item.strip().lower()
        if not item:
            continue
        mult = {"k": 1024, "m": 1024 * 1024}.get(item[-1], 1)
        out.append(int(item[:-1] if mult > 1 else item) * mult)
    return out


def emit(rec, out):
    line = json.dumps(rec)
    print(line, flush=True)
    if out:
        out.write(line + "\n")
        out.flush()


def cell_record(impl, batch, context, ms, mem_gib, bytes_per_step, **extra):
    limit_ms = bytes_per_step / BANDWIDTH * 1e3
    rec = {"impl": impl, "batch": batch, "context": context, "ms_per_token": round(ms, 4),
           "tokens_per_s": round(batch * 1000.0 / ms, 2), "gpu_mem_gib": round(mem_gib, 3),
           "bytes_per_step": int(bytes_per_step), "limit_ms": round(limit_ms, 4), "x_limit": round(ms / limit_ms, 2)}
    rec.update(extra)
    return rec


# ---- transformers

def oom_note(e):
    """A skipped cell's reason: the allocator's first line."""
    return "out of memory: " + (str(e).strip().splitlines() or [""])[0][:200]


def free_gpu(torch):
    gc.collect()
    torch.cuda.empty_cache()


def make_model(torch, max_positions):
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    theta = 500000.0
    if int(transformers.__version__.split(".")[0]) >= 5:  # 5.x: rope_parameters; 4.x: rope_theta
        rope = {"rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    else:
        rope = {"rope_theta": theta}
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
                      max_position_embeddings=max_positions, tie_word_embeddings=True, use_cache=True, **rope)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):  # initialised on the GPU (fast), then cast
        model = LlamaForCausalLM(cfg)
    return model.to(dtype=torch.bfloat16).eval()


def cache_tensors(cache):
    """(keys, values) per layer, (batch, kv_heads, max_len, head_dim) each: transformers 5 / 4.5x layers, or 4.4x."""
    layers = getattr(cache, "layers", None)
    if layers and getattr(layers[0], "keys", None) is not None:
        return [(l.keys, l.values) for l in layers]
    return list(zip(cache.key_cache, cache.value_cache))


def hf_cell(torch, model, batch, context, args):
    from transformers import StaticCache
    max_len = context + args.warmup + args.steps + 1
    need = batch * max_len * KV_BYTES_PER_TOKEN
    free, _ = torch.cuda.mem_get_info()
    if need > free * 0.9:
        return f"out of memory: the static cache needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    torch.cuda.reset_peak_memory_stats()
    dev = "cuda"
    # transformers 5 takes (config, max_cache_len) and ignores the rest; 4.4x needs the batch, device and dtype.
    try:
        cache = StaticCache(config=model.config, max_cache_len=max_len, max_batch_size=batch, device=dev,
                            dtype=torch.bfloat16)
    except TypeError:  # a version that takes no extra arguments
        cache = StaticCache(config=model.config, max_cache_len=max_len)

    def step(tok, pos):
        out = model(input_ids=tok, past_key_values=cache, use_cache=True,
                    cache_position=torch.tensor([pos], device=dev),
                    position_ids=torch.full((batch, 1), pos, device=dev, dtype=torch.long))
        return out.logits[:, -1:].argmax(-1)

    with torch.no_grad():
        tok = torch.randint(0, VOCAB, (batch, 1), device=dev)
        step(tok, 0)  # allocates the cache (lazily, in transformers 5)
        gen = torch.Generator(device=dev)
        gen.manual_seed(1)
        for k, v in cache_tensors(cache):
            if k.shape[0] != batch or k.shape[2] < max_len:
                raise RuntimeError(f"unexpected static cache shape {tuple(k.shape)} for batch {batch}, {max_len}")
            k[:, :, :context].normal_(generator=gen)
            v[:, :, :context].normal_(generator=gen)
        times = []
        for i in range(args.warmup + args.steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            tok = step(tok, context + i)
            torch.cuda.synchronize()
            if i >= args.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied embedding once
    bytes_per_step = weight_bytes + batch * context * KV_BYTES_PER_TOKEN
    rec = cell_record("transformers-sdpa", batch, context, statistics.median(times),
                      torch.cuda.max_memory_allocated() / 2**30, bytes_per_step,
                      ms_min=round(min(times), 4), ms_max=round(max(times), 4), cache_positions=max_len)
    del cache
    return rec


def run_transformers(args, out):
    import torch
    if not torch.cuda.is_available():
        emit({"impl": "transformers-sdpa", "skipped": "no CUDA device visible to PyTorch"}, out)
        return
    model = make_model(torch, max(args.contexts) + args.warmup + args.steps + 16)
    impl = getattr(model.config, "_attn_implementation", "?")
    if impl != "sdpa":
        print(f"note: transformers chose attention '{impl}', not sdpa", file=sys.stderr)
    for batch in args.batches:
        for context in args.contexts:
            try:
                rec = hf_cell(torch, model, batch, context, args)
            except Exception as e:  # out of memory: note it and go on with the next cell
                oom = isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
                if not oom:
                    raise
                rec = oom_note(e)
            if isinstance(rec, str):
                rec = {"impl": "transformers-sdpa", "batch": batch, "context": context, "skipped": rec}
            emit(rec, out)
            free_gpu(torch)
    del model
    free_gpu(torch)


def run_transformers_prefill(args, out):
    import torch
    if not torch.cuda.is_available():
        emit({"impl": "transformers-sdpa", "skipped": "no CUDA device visible to PyTorch"}, out)
        return
    model = make_model(torch, max(args.contexts) + 16)
    for context in args.contexts:
        try:
            torch.manual_seed(1)
            ids = torch.randint(0, VOCAB // 2, (1, context), device="cuda")
            times = []
            with torch.no_grad():
                for i in range(args.steps + 1):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    model.model(input_ids=ids, use_cache=False)
                    torch.cuda.synchronize()
                    if i > 0:
                        times.append((time.perf_counter() - t0) * 1000)
            ms = statistics.median(times)
            emit({"impl": "transformers-sdpa", "context": context, "prefill_ms": round(ms, 3),
                  "prefill_tokens_per_s": round(context * 1000 / ms)}, out)
        except torch.cuda.OutOfMemoryError as e:
            emit({"impl": "transformers-sdpa", "context": context, "skipped": oom_note(e)}, out)
        free_gpu(torch)
    del model
    free_gpu(torch)


def run_gsa_prefill(args, out):
    for context in args.contexts:
        recs = gsa_bench_decode(args, ["--prefill", "--context", str(context), "--steps", "1"])
        if isinstance(recs, str):
            emit({"impl": "gsa", "context": context, "skipped": recs}, out)
            continue
        for r in recs:
            rec = {"impl": "gsa-" + r["method"], "context": context}
            if "skipped" in r:
                rec["skipped"] = r["skipped"]
            else:
                rec.update(prefill_ms=round(r["prefill_ms"], 3), prefill_tokens_per_s=round(r["prefill_tokens_per_s"]),
                           gpu_mem_gib=round(r["gpu_mem_gib"], 2))
            emit(rec, out)


# ---- gsa

def gsa_bench_decode(args, extra):
    """The records of one `gsa bench decode --preset llama1b` call on the GPU, or why there are none (a string)."""
    cmd = [args.gsa, "bench", "decode", "--preset", "llama1b", "--device", "cuda", "--precision", "bf16",
           "--method", args.gsa_methods, "--json"] + extra
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.gsa_timeout)
    except subprocess.TimeoutExpired:
        return f"gsa bench decode took more than --gsa-timeout {args.gsa_timeout} s"
    lines = [l for l in p.stdout.splitlines() if l.startswith("[")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        return f"gsa bench decode exited {p.returncode}: {tail}"
    return json.loads(lines[-1])


def run_gsa(args, out):
    for batch in args.batches:
        for context in args.contexts:
            skip = lambda why: emit({"impl": "gsa", "batch": batch, "context": context, "skipped": why}, out)
            if batch * context > args.gsa_max_tokens:
                skip(f"batch x context above --gsa-max-tokens {args.gsa_max_tokens} (each session's random K/V is "
                     "built on the host: slow)")
                continue
            recs = gsa_bench_decode(args, ["--batch", str(batch), "--context", str(context),
                                           "--steps", str(args.steps)])
            if isinstance(recs, str):
                skip(recs)
                continue
            for r in recs:
                impl = "gsa-" + r["method"]
                if "skipped" in r:
                    emit({"impl": impl, "batch": batch, "context": context, "skipped": r["skipped"]}, out)
                    continue
                bytes_per_step = r["weight_bytes"] * r["weight_passes"] + r["bytes_read"]
                emit(cell_record(impl, batch, context, r["ms_per_token"], r["gpu_mem_gib"], bytes_per_step,
                                 attended_tokens=round(r["attended_tokens"], 1), budget=r["budget"]), out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", default="4k,32k,128k", help="context lengths (k = 1024, m = 1024^2)")
    ap.add_argument("--batches", default="1,16", help="sequences decoded together")
    ap.add_argument("--warmup", type=int, default=5, help="untimed decode steps per cell")
    ap.add_argument("--steps", type=int, default=20, help="timed decode steps per cell")
    ap.add_argument("--gsa", metavar="BIN", help="also run this gsa binary's bench decode on the same shape")
    ap.add_argument("--gsa-methods", default="full,gsa,hgsa", help="methods for --gsa")
    ap.add_argument("--gsa-max-tokens", type=int, default=1 << 21,
                    help="skip gsa cells whose batch x context exceeds this (random K/V is built on the host)")
    ap.add_argument("--gsa-timeout", type=float, default=300, help="seconds for one gsa bench decode call")
    ap.add_argument("--no-transformers", action="store_true", help="only the gsa cells")
    ap.add_argument("--prefill", action="store_true", help="time the prefill (batch 1) instead of decode steps")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args()
    args.contexts = parse_lengths(args.contexts)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not args.contexts or not args.batches or args.steps < 1 or args.warmup < 0:
        ap.error("give at least one context and one batch, --steps >= 1 and --warmup >= 0")
    out = open(args.out, "a") if args.out else None
    meta = {"shape": dict(layers=LAYERS, hidden=HIDDEN, heads=HEADS, kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                          intermediate=FFN, vocab=VOCAB, tie_word_embeddings=True, dtype="bf16"),
            "bandwidth_bytes_per_s": BANDWIDTH, "warmup": args.warmup, "steps": args.steps}
    try:
        import torch, transformers
        meta.update(torch=torch.__version__, transformers=transformers.__version__,
                    device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError as e:
        meta["import_error"] = str(e)
    emit({"meta": meta}, out)
    if not args.no_transformers:
        if "import_error" in meta:
            emit({"impl": "transformers-sdpa", "skipped": meta["import_error"]}, out)
        else:
            (run_transformers_prefill if args.prefill else run_transformers)(args, out)
    if args.gsa:
        (run_gsa_prefill if args.prefill else run_gsa)(args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
