#!/usr/bin/env python3
"""Cross-check of the training recipe in PyTorch + transformers (nobody here wrote them): can the `mini` preset
architecture learn the passkey task at 256 tokens with gsa's optimiser settings? Samples come from
`gsa data tasks` (the exact token layout gsa train uses). Full attention only (the question is whether the
architecture + recipe learn to copy at all).

usage: python3 scripts/torch-passkey-check.py TRAIN.jsonl TEST.jsonl [--steps N ...]
"""
import argparse
import json
import math
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def load(path):
    return [json.loads(l) for l in open(path)]


def batchify(samples, device, loss_all):
    n = max(len(s["ids"]) for s in samples)
    ids = torch.zeros(len(samples), n, dtype=torch.long)
    labels = torch.full((len(samples), n), -100, dtype=torch.long)
    mask = torch.zeros(len(samples), n, dtype=torch.long)
    for i, s in enumerate(samples):
        x = torch.tensor(s["ids"])
        ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
        lb = 0 if loss_all else s["answer_begin"]
        labels[i, lb : len(x)] = x[lb:]
    return ids.to(device), labels.to(device), mask.to(device)


@torch.no_grad()
def exact(model, test, device):
    model.eval()
    right = 0
    for s in test:
        ids = torch.tensor([s["ids"]], device=device)
        pred = model(ids).logits[0].argmax(-1)
        a = s["answer_begin"]
        right += bool((pred[a - 1 : len(s["ids"]) - 1] == ids[0, a:]).all())  # answer digits + separator
    model.train()
    return right / len(test)


def run(train, test, steps, lr, loss_all, batch, device, seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=16384,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, initializer_range=0.02)
    model = LlamaForCausalLM(cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    warm = 40
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    out = []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(train), (batch,), generator=g).tolist()
        ids, labels, mask = batchify([train[i] for i in idx], device, loss_all)
        loss = model(ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % (steps // 6) == 0 or step == steps:
            e = exact(model, test, device)
            out.append((step, round(loss.item(), 3), e))
            print(f"  step {step:6d} loss {loss.item():.3f} passkey exact {e:.2f}  ({time.time() - t0:.0f} s)", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--runs", default="answer:2e-3:3000:4,all:2e-3:3000:4,all:2e-3:20000:4,answer:1e-3:20000:16")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, test = load(args.train), load(args.test)
    print(f"{len(train)} train / {len(test)} test samples, device {device}, torch {torch.__version__}")
    for spec in args.runs.split(","):
        loss, lr, steps, batch = spec.split(":")
        print(f"run: loss on {loss} tokens, lr {lr}, {steps} steps, batch {batch}", flush=True)
        run(train, test, int(steps), float(lr), loss == "all", int(batch), device, 1234)


if __name__ == "__main__":
    main()
