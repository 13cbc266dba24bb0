#!/usr/bin/env python3
"""Writes reference outputs computed by PyTorch + Hugging Face transformers (nobody here wrote them) for the
C++ golden tests: tiny random Llama and Qwen2 models in HF format, with logits, loss and every parameter gradient
for fixed inputs, and a Llama run on a gist stream (gist tokens, gist positions, the DESIGN 1.2 mask as a 4D
attention mask) so the GSA compress-mode forward/backward is checked against transformers too.

usage: python3 scripts/make-goldens.py OUT_DIR       (needs torch, transformers, safetensors)
Outputs per case OUT_DIR/<case>/: config.json, model.safetensors, golden.safetensors (inputs, logits, loss),
grads.safetensors (d loss / d parameter, HF names). f32 throughout.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

GIST_ID = 511
SEQ = 24


def rope_kwargs(theta, scaling):
    """transformers 5.x takes rope_parameters; 4.x takes rope_theta and rope_scaling."""
    if int(transformers.__version__.split(".")[0]) >= 5:
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params.update(scaling)
        return {"rope_parameters": params}
    kw = {"rope_theta": theta}
    if scaling:
        kw["rope_scaling"] = scaling
    return kw


def gist_stream(raw, c, local_chunks, sink, gist_id):
    """Independent Python reading of DESIGN 1.1/1.2 for one level and g = 1: returns ids, positions, labels
    (-100 where the next token is a gist) and the boolean visibility matrix."""
    ids, pos, chunk_of, is_gist = [], [], [], []
    for t, tok in enumerate(raw):
        ids.append(tok); pos.append(t); chunk_of.append(t // c); is_gist.append(False)
        if (t + 1) % c == 0:
            ids.append(gist_id); pos.append(t); chunk_of.append(t // c); is_gist.append(True)
    n = len(ids)
    raw_index = []
    r = 0
    for i in range(n):
        raw_index.append(-1 if is_gist[i] else r)
        if not is_gist[i]:
            r += 1
    vis = torch.zeros(n, n, dtype=torch.bool)
    for q in range(n):
        for k in range(q + 1):
            same = chunk_of[k] == chunk_of[q]
            local = (not is_gist[k]) and chunk_of[q] - local_chunks <= chunk_of[k] < chunk_of[q]
            gist = is_gist[k] and chunk_of[k] < chunk_of[q]
            snk = (not is_gist[k]) and raw_index[k] < sink
            vis[q, k] = same or local or gist or snk
    labels = list(ids)
    for i in range(n):
        if is_gist[i]:
            labels[i] = -100  # HF shifts labels inside: position i-1 then ignores predicting a gist
    return ids, pos, labels, vis


def run_case(out_dir, name, model, ids, labels, position_ids=None, mask4d=None, extra_config=None):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    model.config.torch_dtype = torch.float32
    if extra_config:
        for k, v in extra_config.items():
            setattr(model.config, k, v)
    model.save_pretrained(d, safe_serialization=True)
    model.zero_grad()
    input_ids = torch.tensor([ids])
    kwargs = {"labels": torch.tensor([labels])}
    if position_ids is not None:
        kwargs["position_ids"] = torch.tensor([position_ids])
    if mask4d is not None:
        # additive float mask (batch, 1, q, k): 0 visible, -inf hidden
        m = torch.full(mask4d.shape, torch.finfo(torch.float32).min)
        m[mask4d] = 0.0
        kwargs["attention_mask"] = m[None, None]
    outp = model(input_ids, **kwargs)
    outp.loss.backward()
    golden = {
        "input_ids": input_ids[0].to(torch.int32).contiguous(),
        "labels": torch.tensor(labels, dtype=torch.int32),
        "logits": outp.logits[0].detach().float().contiguous(),
        "loss": outp.loss.detach().reshape(1).float(),
    }
    if position_ids is not None:
        golden["position_ids"] = torch.tensor(position_ids, dtype=torch.int32)
    if mask4d is not None:
        golden["mask"] = mask4d.to(torch.uint8).contiguous()
    save_file(golden, os.path.join(d, "golden.safetensors"))
    grads = {}
    seen = set()
    for pname, p in model.named_parameters():
        if p.grad is None or id(p) in seen:
            continue
        seen.add(id(p))
        grads[pname] = p.grad.detach().float().contiguous()
    save_file(grads, os.path.join(d, "grads.safetensors"))
    print(f"{name}: loss {outp.loss.item():.6f}, {len(grads)} gradients, logits {tuple(outp.logits.shape)}")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "goldens"
    torch.manual_seed(1234)
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(0, 500, (SEQ,), generator=g).tolist()

    llama_cfg = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
        **rope_kwargs(500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        tie_word_embeddings=False, attention_bias=False, bos_token_id=1, eos_token_id=2)
    llama_cfg._attn_implementation = "eager"
    llama = LlamaForCausalLM(llama_cfg).float()
    with torch.no_grad():  # random non-trivial norms so RMSNorm weights are exercised
        for n_, p in llama.named_parameters():
            if "norm" in n_:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    run_case(out_dir, "llama", llama, ids, ids)

    # Gist stream on the same Llama: c = 4, local_chunks = 1, sink = 3.
    s_ids, s_pos, s_labels, vis = gist_stream(ids, 4, 1, 3, GIST_ID)
    gsa = {"chunk": [4], "gists_per_chunk": 1, "gist_token_ids": [GIST_ID], "local_chunks": 1, "sink": 3}
    run_case(out_dir, "llama-gist", llama, s_ids, s_labels, position_ids=s_pos, mask4d=vis,
             extra_config={"gsa": gsa})
    with open(os.path.join(out_dir, "llama-gist", "raw_ids.json"), "w") as f:
        json.dump(ids, f)

    torch.manual_seed(4321)
    qwen_cfg = Qwen2Config(
        vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=256, rms_norm_eps=1e-6, **rope_kwargs(1000000.0, None),
        tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1, eos_token_id=2)
    qwen_cfg._attn_implementation = "eager"
    qwen = Qwen2ForCausalLM(qwen_cfg).float()
    with torch.no_grad():
        for n_, p in qwen.named_parameters():
            if "norm" in n_:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            if n_.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    run_case(out_dir, "qwen2", qwen, ids, ids)

    # Head dimension 64 (what the CUDA attention kernels compile for): the GPU model is checked against these.
    torch.manual_seed(2468)
    d64_cfg = LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, max_position_embeddings=256, rms_norm_eps=1e-5,
        **rope_kwargs(500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        tie_word_embeddings=False, attention_bias=False, bos_token_id=1, eos_token_id=2)
    d64_cfg._attn_implementation = "eager"
    d64 = LlamaForCausalLM(d64_cfg).float()
    with torch.no_grad():
        for n_, p in d64.named_parameters():
            if "norm" in n_:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    run_case(out_dir, "llama-d64", d64, ids, ids)
    run_case(out_dir, "llama-d64-gist", d64, s_ids, s_labels, position_ids=s_pos, mask4d=vis,
             extra_config={"gsa": gsa})

    torch.manual_seed(1357)
    q64_cfg = Qwen2Config(
        vocab_size=512, hidden_size=128, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, rms_norm_eps=1e-6, **rope_kwargs(1000000.0, None),
        tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1, eos_token_id=2)
    q64_cfg._attn_implementation = "eager"
    q64 = Qwen2ForCausalLM(q64_cfg).float()
    with torch.no_grad():
        for n_, p in q64.named_parameters():
            if "norm" in n_:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            if n_.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    run_case(out_dir, "qwen2-d64", q64, ids, ids)


if __name__ == "__main__":
    main()
