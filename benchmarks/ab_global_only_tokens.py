"""A/B of the global-only frozen steps (CLIP special case, unconditioned) between two checkouts.

Session 15 made a global-only head's frozen table token-free (``prepare_frozen_source``): this
times ``bench_train.bench_variant`` for ``clip`` and ``unconditioned`` at the demo's shapes (3,000
products, batch 256, 49 image and 32 text tokens of width 1280, 1 thread, float32) in each
checkout, interleaved, twice, each in its own process:

    git worktree add /tmp/before 34e4fda   # the commit before the change
    python benchmarks/ab_global_only_tokens.py OUT.json /tmp/before .
"""
import json
import os
import subprocess
import sys
trees = {"before": os.path.abspath(sys.argv[2]), "after": os.path.abspath(sys.argv[3])}
driver = r'''
import sys, json, torch, argparse
sys.argv = ["bench_train.py"]
import bench_train as bt
torch.set_num_threads(1)
ns = argparse.Namespace(products=3000, degree=8, descriptions=200, batch=256, dim=384, token_dim=1280,
    image_tokens=49, text_tokens=32, d_model=256, steps=12, warmup=2, hard_negatives=8, random_negatives=8,
    w_global=1.0, compile_loss=False, raw_tokens=False, profile=0, loop_steps=0, amp_cpu=False)
device = torch.device("cpu")
data = bt.random_graph(ns.products, ns.degree, ns.descriptions)
source = bt.TensorFeatures(bt.random_features(ns.products, ns.dim, ns.image_tokens, ns.text_tokens, ns.token_dim, torch.Generator().manual_seed(0)))
table = torch.randn(ns.descriptions, ns.dim)
out = {name: bt.bench_variant(name, ns, data, source, table, device)["pairs_per_s"] for name in ("clip", "unconditioned")}
print(json.dumps(out))
'''
rows = []
for rep in range(2):
    for label, tree in trees.items():
        env = {"PYTHONPATH": f"{tree}:{tree}/benchmarks", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1"}
        res = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, cwd="/tmp")
        line = [l for l in res.stdout.splitlines() if l.startswith("{")]
        row = {"rep": rep, "tree": label, **(json.loads(line[-1]) if line else {"error": res.stderr[-500:]})}
        print(row, flush=True)
        rows.append(row)
json.dump({"command": " ".join(["python", *sys.argv]), "note": "box loaded by three training runs on its 2 cores", "rows": rows}, open(sys.argv[1], "w"), indent=1)
