#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench --against pytorch`: the same ViT (+ ARC) training step
and inference, timed the same way, printed as one JSON object.

The model is the PyTorch ViT + ARC written from the spec for the parity fixtures
(`tools/fixtures/arc_vit.py`, official parameter names and freezing rule): methods `arc`,
`arc-att`, `linear` (frozen backbone, head only) and `full`; `lora` and `adapter` attach the
same tuners as petl's (`petl_core::tuners`) to that frozen ViT with forward hooks:
- LoRA on q and v: `y + (alpha/r) x A B`, rank 8, alpha 8, A Kaiming-uniform, B zeros;
- bottleneck adapter on the attention and FFN branch outputs (after `projective` and `fc2`,
  before the residual add): `h + up(GELU(down(h)))`, width 8, down Xavier-uniform, up zeros.

    python3 tools/bench/bench_torch.py --method arc --image 224 --patch 16 --dim 192 --layers 12 \
        --heads 3 --mlp 768 --classes 100 --batch 8 --steps 5 --warmup 2 --threads 2
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from arc_vit import ArcViT, is_trainable  # noqa: E402


class LoraPair(torch.nn.Module):
    def __init__(self, dim, rank=8, alpha=8.0):
        super().__init__()
        self.a = torch.nn.Parameter(torch.empty(dim, rank))
        torch.nn.init.kaiming_uniform_(self.a.T, a=5 ** 0.5)
        self.b = torch.nn.Parameter(torch.zeros(rank, dim))
        self.scale = alpha / rank

    def hook(self, module, inputs, output):
        return output + (inputs[0] @ self.a @ self.b) * self.scale


class Bottleneck(torch.nn.Module):
    def __init__(self, dim, width=8):
        super().__init__()
        self.down = torch.nn.Linear(dim, width)
        torch.nn.init.xavier_uniform_(self.down.weight)
        self.up = torch.nn.Linear(width, dim)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def hook(self, module, inputs, output):
        return output + self.up(torch.nn.functional.gelu(self.down(output)))


def attach_tuner(model, method, dim):
    """The tuner modules of `lora` / `adapter`, hooked into every block (empty otherwise)."""
    tuners = torch.nn.ModuleList()
    for block in model.transformer.layer:
        if method == "lora":
            sites = [block.attention.query, block.attention.value]
            make = LoraPair
        elif method == "adapter":
            sites = [block.attention.projective, block.mlp.fc2]
            make = Bottleneck
        else:
            continue
        for site in sites:
            tuner = make(dim)
            site.register_forward_hook(tuner.hook)
            tuners.append(tuner)
    return tuners


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True, choices=["arc", "arc-att", "lora", "adapter", "linear", "full"])
    for name, default in [("image", 224), ("patch", 16), ("dim", 192), ("layers", 12), ("heads", 3), ("mlp", 768),
                          ("classes", 100), ("batch", 8), ("steps", 5), ("warmup", 2), ("threads", 2), ("bottleneck", 50)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = {"image_size": a.image, "patch_size": a.patch, "in_chans": 3, "hidden_size": a.dim, "mlp_dim": a.mlp,
           "num_heads": a.heads, "num_layers": a.layers, "adapter_dim": a.bottleneck, "adapter_dropout": 0.1,
           "attention_dropout_rate": 0.0, "dropout_rate": 0.0, "num_classes": a.classes, "layer_norm_eps": 1e-6}
    mode = {"arc": "arc", "arc-att": "arc_att"}.get(a.method, "none")
    model = ArcViT(cfg, mode)
    for name, p in model.named_parameters():
        if a.method == "full":
            p.requires_grad_(True)
        elif a.method in ("linear", "lora", "adapter"):
            p.requires_grad_(name.startswith("head_mlp."))
        else:
            p.requires_grad_(is_trainable(name))
    tuners = attach_tuner(model, a.method, a.dim)
    trainable = [p for p in model.parameters() if p.requires_grad] + [p for p in tuners.parameters()]
    optim = torch.optim.AdamW(trainable, lr=1e-3, eps=1e-8)
    x = torch.randn(a.batch, 3, a.image, a.image)
    y = torch.arange(a.batch) % a.classes
    loss_fn = torch.nn.CrossEntropyLoss()

    model.train()
    steps = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optim.step()
        loss.item()
        if i >= a.warmup:
            steps.append(time.perf_counter() - t0)

    model.eval()
    infer = []
    with torch.no_grad():
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            model(x).sum().item()
            if i >= a.warmup:
                infer.append(time.perf_counter() - t0)

    print(json.dumps({
        "torch": torch.__version__, "threads": a.threads, "method": a.method,
        "trainable_params": sum(p.numel() for p in trainable),
        "step_median_s": statistics.median(steps), "step_min_s": min(steps), "step_max_s": max(steps),
        "infer_median_s": statistics.median(infer),
    }))


if __name__ == "__main__":
    main()
