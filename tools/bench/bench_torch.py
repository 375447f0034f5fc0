#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench --against pytorch`: the same ViT (+ ARC) training step
and inference, timed the same way, printed as one JSON object.

The model is the PyTorch ViT + ARC written from the spec for the parity fixtures
(`tools/fixtures/arc_vit.py`, official parameter names and freezing rule): methods `arc`,
`arc-att`, `linear` (frozen backbone, head only) and `full`. LoRA and the bottleneck adapter
have no PyTorch twin here yet; the Rust bench reports "-" for them.

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True, choices=["arc", "arc-att", "linear", "full"])
    for name, default in [("image", 224), ("patch", 16), ("dim", 192), ("layers", 12), ("heads", 3), ("mlp", 768),
                          ("classes", 100), ("batch", 8), ("steps", 5), ("warmup", 2), ("threads", 2), ("bottleneck", 50)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = {"image_size": a.image, "patch_size": a.patch, "in_chans": 3, "hidden_size": a.dim, "mlp_dim": a.mlp,
           "num_heads": a.heads, "num_layers": a.layers, "adapter_dim": a.bottleneck, "adapter_dropout": 0.1,
           "attention_dropout_rate": 0.0, "dropout_rate": 0.0, "num_classes": a.classes, "layer_norm_eps": 1e-6}
    mode = {"arc": "arc", "arc-att": "arc_att", "linear": "none", "full": "none"}[a.method]
    model = ArcViT(cfg, mode)
    for name, p in model.named_parameters():
        if a.method == "full":
            p.requires_grad_(True)
        elif a.method == "linear":
            p.requires_grad_(name.startswith("head_mlp."))
        else:
            p.requires_grad_(is_trainable(name))
    trainable = [p for p in model.parameters() if p.requires_grad]
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
