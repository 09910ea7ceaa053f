"""Few-shot probe sweep: xrlab vs scikit-learn on identical features, shots and folds.

Workload: 768-d features, 2,000 pool / 1,000 test images, 5 binary labels, shots per class
k in {1, 2, 4, 8, 16, 32, 64} x 10 seeds; logistic regression with C chosen by 3-fold CV over
{0.01, 0.1, 1, 10} (validation log-loss, ties to the smaller C) when k >= 4, else C = 1, on
features standardised as --standardize says (the recipe's `standardize`, default pool).

1. writes the features (.npy) and a manifest CSV, and a recipe for them;
2. times `xrlab run` on that recipe (release build, 2 OpenBLAS threads);
3. reads the training shots xrlab sampled for every cell (results.jsonl) and times
   scikit-learn doing the same work on the same shots and the same folds (pool: StandardScaler
   fitted once on every pool row; shots: refitted on each fold's training part; none: raw
   features; LogisticRegression(lbfgs)), with 2 threads;
4. runs scikit-learn once more on the raw features (C chosen the same way): the low-shot goal
   is xrlab's mean AUROC >= that minus 0.005 at every k;
5. prints mean test AUROC per k, the differences, the times and the speed ratio.

Usage (from the repository root, after `swift build -c release`):
    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python3 bench/probe_sweep.py [--standardize pool|shots|none]
"""
import argparse, json, os, subprocess, sys, time
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

assert sklearn.__version__ == "1.9.1", sklearn.__version__
ap = argparse.ArgumentParser()
ap.add_argument("--standardize", choices=["pool", "shots", "none"], default="pool")
ap.add_argument("--xrlab-only", action="store_true", help="stop after `xrlab run` (the run directory is kept for `xrlab budget`)")
ap.add_argument("--xrlab", help="the xrlab binary (default: .build/release/xrlab)")
ARGS = ap.parse_args()
MODE = ARGS.standardize
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, ".build", "bench-probe-sweep")
os.makedirs(OUT, exist_ok=True)
XRLAB = ARGS.xrlab or os.path.join(ROOT, ".build", "release", "xrlab")
LABELS = ["l0", "l1", "l2", "l3", "l4"]
SHOTS = [1, 2, 4, 8, 16, 32, 64]
SEEDS = 10
GRID = [0.01, 0.1, 1.0, 10.0]

# ---- data: labels driven by a few latent directions, seen through 768 noisy features ----
rng = np.random.default_rng(0)
n_pool, n_test, d = 2000, 1000, 768
z = rng.standard_normal((n_pool + n_test, 16))
mix = rng.standard_normal((16, d)) / 4
x = (z @ mix + rng.standard_normal((n_pool + n_test, d))).astype(np.float32)
y = np.stack([(z[:, i] + 0.5 * z[:, i + 5] + 0.8 * rng.standard_normal(len(z))) > 0.6 for i in range(5)], 1)
np.save(os.path.join(OUT, "features.npy"), x)
with open(os.path.join(OUT, "table.csv"), "w") as f:
    f.write("path,split,labels\n")
    for i in range(len(x)):
        f.write(f"row{i},{'train' if i < n_pool else 'test'},{'|'.join(l for l, v in zip(LABELS, y[i]) if v)}\n")
with open(os.path.join(OUT, "sweep.yaml"), "w") as f:
    f.write(f"""version: 1
name: probe-sweep-benchmark
features: {{matrix: features.npy}}
data: {{manifest: table.csv, label_column: labels, labels: [{", ".join(LABELS)}], split_column: split}}
methods:
  - {{name: logistic, C: [{", ".join(map(str, GRID))}], cv_min_shots: 4, folds: 3, default_C: 1.0, standardize: {MODE}}}
shots: [{", ".join(map(str, SHOTS))}]
seeds: {SEEDS}
metrics: [auroc]
bootstrap: 0
output: run
""")

# ---- xrlab ----
env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
t0 = time.perf_counter()
subprocess.run([XRLAB, "run", os.path.join(OUT, "sweep.yaml"), "--force", "--quiet", "--threads", "2"], check=True, env=env,
               stdout=subprocess.DEVNULL)
t_xrlab = time.perf_counter() - t0
cells = [json.loads(l) for l in open(os.path.join(OUT, "run", "results.jsonl"))]
assert len(cells) == len(LABELS) * len(SHOTS) * SEEDS, len(cells)
if ARGS.xrlab_only:
    print(f"xrlab run: {t_xrlab:.2f} s; run directory {os.path.join(OUT, 'run')}")
    sys.exit(0)

# ---- scikit-learn on the same shots and folds ----
index = {f"row{i}": i for i in range(len(x))}


def folds_of(labels, k=3):
    seen = {}
    out = []
    for c in labels:
        r = seen.get(c, 0)
        seen[c] = r + 1
        out.append(r % k)
    return np.array(out)


def fit_predict(xtr, ytr, xev, C, mode):
    if mode == "shots":
        sc = StandardScaler().fit(xtr)
        xtr, xev = sc.transform(xtr), sc.transform(xev)
    m = LogisticRegression(C=C, max_iter=1000).fit(xtr, ytr)
    return m.predict_proba(xev)


def sklearn_sweep(mode):
    """Mean test AUROC per k for scikit-learn on xrlab's shots and folds, and the time taken.
    `pool` features are transformed once (as xrlab does, timed with the rest)."""
    t0 = time.perf_counter()
    feats = StandardScaler().fit(x[:n_pool]).transform(x) if mode == "pool" else x
    out = {}
    for c in cells:
        cell = c["cell"]
        li = LABELS.index(cell["task"])
        rows = np.array([index[i] for i in c["train_ids"]])
        xtr, ytr = feats[rows], y[rows, li].astype(int)
        C = 1.0
        if cell["shots"] >= 4:
            f = folds_of(ytr)
            best, best_loss = None, np.inf
            for cand in sorted(GRID):
                total, count = 0.0, 0
                for k in range(3):
                    tr, va = f != k, f == k
                    p = fit_predict(xtr[tr], ytr[tr], xtr[va], cand, mode)
                    total += log_loss(ytr[va], p, labels=[0, 1]) * va.sum()
                    count += va.sum()
                if total / count < best_loss - 1e-12:
                    best, best_loss = cand, total / count
            C = best
        p = fit_predict(xtr, ytr, feats[n_pool:], C, mode)
        out.setdefault(cell["shots"], []).append(roc_auc_score(y[n_pool:, li], p[:, 1]))
    return out, time.perf_counter() - t0


sk, t_sklearn = sklearn_sweep(MODE)
raw, t_raw = sklearn_sweep("none") if MODE != "none" else (sk, t_sklearn)

mine = {}
for c in cells:
    mine.setdefault(c["cell"]["shots"], []).append(c["metrics"]["auroc"])
print(f"standardize: {MODE}")
print(f"{'k':>4} {'xrlab AUROC':>12} {'sklearn same':>13} {'diff':>8} {'sklearn raw':>12} {'vs raw':>8}  goal (>= raw - 0.005)")
ok = True
for k in SHOTS:
    a, b, r = np.mean(mine[k]), np.mean(sk[k]), np.mean(raw[k])
    ok &= a >= r - 0.005
    print(f"{k:>4} {a:>12.4f} {b:>13.4f} {a - b:>+8.4f} {r:>12.4f} {a - r:>+8.4f}  {'met' if a >= r - 0.005 else 'NOT met'}")
print(f"xrlab run (whole command, {len(cells)} cells): {t_xrlab:.2f} s")
print(f"scikit-learn (same shots, folds, CV, standardisation): {t_sklearn:.2f} s")
print(f"scikit-learn on raw features:                          {t_raw:.2f} s")
print(f"speed ratio: {t_sklearn / t_xrlab:.1f}x")
print("low-shot goal " + ("met at every k" if ok else "NOT met"))
