#!/usr/bin/env python3
"""A/B timing of xtask builds or settings on a noisy machine: runs `xtask bench` for each variant
in turn, ROUNDS times (interleaved, so drift hits every variant alike), and prints the median and
minimum of the per-run median step and inference times.

    python3 tools/bench/ab.py 3 arc,full "base=BIN=/tmp/xtask-old" "new=BIN=target/debug/xtask" \
        "one-thread=RAYON_NUM_THREADS=1"

A variant is `label=` followed by space-separated `KEY=VALUE` environment settings; `BIN=` picks
the xtask binary (default `target/debug/xtask`). PETL_AB_BACKBONE picks the preset (default
vit-ti16); PETL_AB_ARGS adds other bench options (not --steps, --warmup, --batch).
"""
import json, subprocess, sys, statistics, os
rounds = int(sys.argv[1]); methods = sys.argv[2]; variants = sys.argv[3:]
res = {}
for r in range(rounds):
    for v in variants:
        label, _, rest = v.partition('=')
        parts = rest.split()
        env = dict(os.environ); binary = 'target/debug/xtask'
        for p in parts:
            k, _, val = p.partition('=')
            if k == 'BIN': binary = val
            else: env[k] = val
        out = subprocess.run([binary, 'bench', '--method', methods, '--backbone', os.environ.get('PETL_AB_BACKBONE', 'vit-ti16'), '--batch', '8', '--steps', '5', '--warmup', '2', '--json', '--out', 'runs/ab'] + os.environ.get('PETL_AB_ARGS', '').split(), env=env, capture_output=True, text=True).stdout
        rows = json.loads(out)['rows']
        for row in rows:
            res.setdefault((label, row['method']), []).append((row['step_median_s'], row['infer_median_s']))
for (label, m), xs in sorted(res.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    st = sorted(x[0] for x in xs); inf = sorted(x[1] for x in xs)
    print(f"{m:8} {label:10} step median {statistics.median(st):.3f} min {st[0]:.3f}  infer median {statistics.median(inf):.3f} min {inf[0]:.3f}  n={len(xs)}")
