"""Time and peak memory of one `xrlab suggest` round per strategy on a large pool.

Writes .build/bench-selection/: 100,000 rows x 768-d float32 features (50 Gaussian clusters of
unequal size, unit noise), a manifest with a binary label carried by the clusters, a 90/10
train/test split by row, a recipe, and 1,000 labelled training rows; then runs

    xrlab suggest sweep.yaml --labelled labelled.csv --budget 100 --strategy S --out next_S.csv

for every strategy under /usr/bin/time and prints wall seconds and peak RSS. `random` needs no
computation beyond loading the 307 MB of features and writing the CSV: its time is the floor the
others add to.

    python3 bench/selection_scale.py [--xrlab .build/release/xrlab] [--rows 100000] [--dim 768]

numpy only (pinned by what is installed; the data are seeded).
"""
import argparse, csv, os, subprocess, sys
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--xrlab", default=".build/release/xrlab")
ap.add_argument("--rows", type=int, default=100_000)
ap.add_argument("--dim", type=int, default=768)
ap.add_argument("--budget", type=int, default=100)
ap.add_argument("--labelled", type=int, default=1000)
ap.add_argument("--strategies", default="random,uncertainty,kcenter,typiclust,probcover,balanced")
a = ap.parse_args()

OUT = os.path.join(".build", "bench-selection")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(0)
k = 50
sizes = rng.dirichlet(np.ones(k) * 2)
cluster = rng.choice(k, size=a.rows, p=sizes)
centres = rng.normal(0, 1, (k, a.dim)).astype(np.float32) * 0.5
x = centres[cluster] + rng.normal(0, 1, (a.rows, a.dim)).astype(np.float32) * 0.35
positive = rng.random(k) < 0.3
labels = positive[cluster] ^ (rng.random(a.rows) < 0.05)
split = np.where(rng.random(a.rows) < 0.1, "test", "train")
np.save(os.path.join(OUT, "features.npy"), x.astype(np.float32))
with open(os.path.join(OUT, "table.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "split", "labels"])
    for i in range(a.rows):
        w.writerow([f"row{i}", split[i], "finding" if labels[i] else ""])
with open(os.path.join(OUT, "sweep.yaml"), "w") as f:
    f.write("version: 1\nname: selection-scale\nfeatures: {matrix: features.npy}\n"
            "data: {manifest: table.csv, label_column: labels, labels: [finding], split_column: split}\n"
            "methods:\n  - {name: logistic, C: [0.1, 1.0], cv_min_shots: 4}\nshots: [4]\nseeds: 1\noutput: run\n")
train = np.flatnonzero(split == "train")
chosen = rng.choice(train, size=a.labelled, replace=False)
with open(os.path.join(OUT, "labelled.csv"), "w") as f:
    f.write("path\n" + "".join(f"row{i}\n" for i in chosen))

print(f"pool: {len(train) - a.labelled} unlabelled training rows x {a.dim}-d, {a.labelled} labelled, budget {a.budget}")
print(f"{'strategy':12s} {'wall_s':>8s} {'peak_rss_mb':>12s}")
for s in a.strategies.split(","):
    t = os.path.join(OUT, "time_" + s)
    cmd = ["/usr/bin/time", "-f", "%e %M", "-o", t, a.xrlab, "suggest", os.path.join(OUT, "sweep.yaml"),
           "--labelled", os.path.join(OUT, "labelled.csv"), "--budget", str(a.budget), "--strategy", s,
           "--out", os.path.join(OUT, f"next_{s}.csv")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{s} failed:\n{r.stderr}")
    wall, rss = open(t).read().split()[-2:]
    print(f"{s:12s} {float(wall):8.2f} {int(rss) / 1024:12.0f}")
