#!/usr/bin/env python3
"""Checks that a model directory written by gsa loads in Hugging Face transformers as a plain Llama/Qwen2 model
and reproduces the logits gsa computed. usage: check-hf-load.py MODEL_DIR GOLDEN.safetensors
(GOLDEN holds input_ids and logits as written by `gsa forward --dump`)."""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

model_dir, golden_path = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
g = load_file(golden_path)
with torch.no_grad():
    logits = model(g["input_ids"].long()[None]).logits[0]
err = (logits - g["logits"]).abs().max().item() / g["logits"].abs().max().item()
print(f"{model_dir}: {type(model).__name__} loaded; max relative logit error vs gsa {err:.3e}")
sys.exit(0 if err < 1e-4 else 1)
