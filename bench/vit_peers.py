"""ViT encoder speed: xrlab vs PyTorch (eager, inference_mode) vs ONNX Runtime, same run.

Each tool encodes the identical architecture (random weights), batch, input size and thread
count, in its own process so peak RSS is measured per tool. Prints one table: images/s, the
ratio of xrlab to the faster peer, achieved GFLOP/s, percent of the sgemm ceiling measured in
the same run at the model's own matrix shapes (OpenBLAS, via `xrlab bench`), peak RSS.

The peers return the class-token features (timm `num_classes=0`, token pooling; for EVA-X, timm's
`Eva` as EVA-X builds it, the pooled fc_norm of the patch mean — xrlab's class-token-only run
computes every output there too, since EVA-02 pools the patch tokens). xrlab runs
twice: computing every output (class token, patch tokens, patch mean) as a patch-feature
embedding does, and with `--class-token-only` (the same output as the peers: its last block's
attention, projection and MLP run on the class token alone; its GFLOP/s counts that work).

Interleaved turns: the four processes (xrlab both ways, PyTorch, ONNX Runtime) start, load and
warm up once per workload, then take turns running for `--turn-seconds` (at least one forward
pass each), `--turns` turns per tool, the order rotating each turn, with a short pause between
turns (so threads that spin after their work do not run into the next tool's turn). On a
machine whose speed drifts within seconds (a shared VM), every tool then samples the same
conditions. Each tool's images/s is its images over its time across all turns; the table also
gives the median and range of the per-turn ratios. The sgemm ceiling takes a turn of its own in
the same rotation (`ceiling SECONDS`: OpenBLAS at the model's three shapes, a third of the turn
each, the best of them), so it samples the same conditions as the tools; the table's ceiling is
the mean over its turns, and the per-turn percentages set each turn's xrlab rate against that
round's ceiling. It runs in the class-token process; xrlab's peak RSS is the every-output
process's.

Usage (from the repository root, after `swift build -c release`):
    pip install onnxruntime onnx onnxscript    # torch==2.13.0+cpu and timm as for the fixtures
    python3 bench/vit_peers.py [--turns 10] [--turn-seconds 1] [--only vitBase16]
"""
import argparse, json, os, resource, statistics, sys, time, types

from turns import Worker, serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XRLAB = os.path.join(ROOT, ".build", "release", "xrlab")
OUT = os.path.join(ROOT, ".build", "bench-vit")
WORKLOADS = [  # (preset, batch, size)
    ("vitTiny16", 1, 224), ("vitTiny16", 8, 224),
    ("vitSmall16", 1, 224), ("vitSmall16", 8, 224),
    ("vitBase16", 1, 224), ("vitBase16", 8, 224),
    ("vitBase14at518", 1, 518),
    ("evaXSmall16", 1, 224), ("evaXSmall16", 8, 224),
    ("evaXBase16", 1, 224), ("evaXBase16", 8, 224),
]
ARCH = {  # preset -> timm VisionTransformer arguments (identical to xrlab's presets)
    "vitTiny16": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "vitSmall16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "vitBase16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vitBase14at518": dict(patch_size=14, embed_dim=768, depth=12, num_heads=12),
}
EVA = {  # preset -> timm Eva arguments, as hustvl/EVA-X eva_x.py builds EVA-X (identical to xrlab's presets)
    "evaXSmall16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "evaXBase16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, qkv_fused=False, scale_mlp=True),
}


def build(preset, size):
    import torch
    for m in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(m, types.ModuleType(m))
    import timm
    torch.manual_seed(0)
    if preset in EVA:
        # The peers return `pooled` (fc_norm of the patch mean), as xrlab's every-output run computes.
        return timm.models.eva.Eva(img_size=size, num_classes=0, mlp_ratio=4 * 2 / 3, swiglu_mlp=True, use_rot_pos_emb=True,
                                   ref_feat_shape=(14, 14), **EVA[preset]).eval()
    return timm.models.vision_transformer.VisionTransformer(img_size=size, num_classes=0, **ARCH[preset]).eval()


def child(tool, preset, batch, size):
    """Runs in a fresh process: load and warm up one tool, then serve timed turns on stdin
    (`run SECONDS` → {"images", "seconds"}); at the end of input print the peak RSS."""
    import numpy as np
    import torch
    torch.set_num_threads(2)
    x = torch.randn(batch, 3, size, size)
    if tool == "pytorch":
        model = build(preset, size)
        run = lambda: model(x)
    else:
        import onnxruntime as ort
        path = os.path.join(OUT, f"{preset}_{size}.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        run = lambda: sess.run(None, feed)
    with torch.inference_mode():
        run()
        serve(run, "images", batch)
    print(json.dumps({"tool": tool, "peak_rss_mb": peak_rss_mb()}), flush=True)


def peak_rss_mb():
    """VmHWM: peak RSS of this process image (ru_maxrss would include the parent's peak across exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export(preset, size):
    import torch
    path = os.path.join(OUT, f"{preset}_{size}.onnx")
    if os.path.exists(path):
        return
    model = build(preset, size)
    for blk in getattr(model, "blocks", []) if preset in EVA else []:
        blk.attn.fused_attn = False  # timm Eva's scaled_dot_product_attention call does not trace (is_causal); same math
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), path, input_names=["pixels"], output_names=["features"],
                      dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=10, help="turns per tool and workload")
    ap.add_argument("--turn-seconds", type=float, default=1.0, help="seconds per turn (at least one forward pass)")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between turns")
    ap.add_argument("--only")
    ap.add_argument("--child", nargs=4)
    args = ap.parse_args()
    if args.turns < 1 or args.turn_seconds < 0 or args.pause < 0:
        ap.error(f"--turns must be at least 1 and --turn-seconds, --pause at least 0 "
                 f"(got {args.turns}, {args.turn_seconds}, {args.pause})")
    if args.child:
        tool, preset, batch, size = args.child
        child(tool, preset, int(batch), int(size))
        return
    os.makedirs(OUT, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", MKL_NUM_THREADS="2")
    tools = ["xrlab", "xrlab_cls", "pytorch", "onnxruntime"]
    rows = []
    for preset, batch, size in WORKLOADS:
        if args.only and args.only != preset:
            continue
        export(preset, size)
        xr = [XRLAB, "bench", "--preset", preset, "--batch", str(batch), "--size", str(size), "--threads", "2", "--serve"]
        workers = {
            "xrlab": Worker(xr, env),
            "xrlab_cls": Worker(xr + ["--class-token-only"], env),
            "pytorch": Worker([sys.executable, __file__, "--child", "pytorch", preset, str(batch), str(size)], env),
            "onnxruntime": Worker([sys.executable, __file__, "--child", "onnxruntime", preset, str(batch), str(size)], env),
        }
        for tool in tools:          # wait until every process has loaded and warmed up
            workers[tool].ask("run 0")
        time.sleep(args.pause)
        # The ceiling runs in the class-token process, so its buffers stay out of the every-output
        # process's peak RSS (the one the table reports; it holds more than the class-token one).
        turns = []
        order = tools + ["ceiling"]
        for k in range(args.turns):
            turn = {}
            for tool in order[k % len(order):] + order[:k % len(order)]:
                time.sleep(args.pause)
                if tool == "ceiling":
                    turn[tool] = workers["xrlab_cls"].ask(f"ceiling {args.turn_seconds}")["sgemm_gflops"]
                else:
                    turn[tool] = workers[tool].ask(f"run {args.turn_seconds}")
            turns.append(turn)
            rate = {t: turn[t]["images"] / turn[t]["seconds"] for t in tools}
            best = max(rate["pytorch"], rate["onnxruntime"])
            print(f"{preset:>15} b{batch} {size}px turn {k + 1:2d}: xrlab {rate['xrlab']:7.2f} img/s (class token only {rate['xrlab_cls']:7.2f})  "
                  f"pytorch {rate['pytorch']:7.2f}  onnxruntime {rate['onnxruntime']:7.2f}  "
                  f"ratio {rate['xrlab'] / best:5.2f}x / {rate['xrlab_cls'] / best:5.2f}x  "
                  f"sgemm {turn['ceiling']:6.1f}", flush=True)
        summary = {tool: workers[tool].close() for tool in tools}
        flops = {t: turns[0][t]["flops_per_image"] for t in ("xrlab", "xrlab_cls")}
        rows.append((preset, batch, size, turns, statistics.mean(u["ceiling"] for u in turns), summary, flops))
    print()
    print(f"{args.turns} interleaved turns of {args.turn_seconds:g} s per tool; xrlab columns: every output / class token only (the peers' output).")
    print()
    print("| model | batch | px | xrlab img/s | PyTorch img/s | ONNX Runtime img/s | xrlab / faster peer | per turn: median (range) | xrlab GFLOP/s | % of sgemm | peak RSS MB (xrlab / PyTorch / ORT) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    med = statistics.median
    for preset, batch, size, turns, ceiling, summary, flops in rows:
        rate = {t: sum(u[t]["images"] for u in turns) / sum(u[t]["seconds"] for u in turns) for t in tools}
        best = max(rate["pytorch"], rate["onnxruntime"])
        per = {t: [u[t]["images"] / u[t]["seconds"] / max(u[p]["images"] / u[p]["seconds"] for p in ("pytorch", "onnxruntime"))
                   for u in turns] for t in ("xrlab", "xrlab_cls")}
        gf = {t: rate[t] * flops[t] / 1e9 for t in ("xrlab", "xrlab_cls")}
        spread = lambda t: f"{med(per[t]):.2f} ({min(per[t]):.2f}–{max(per[t]):.2f})"
        pct = {t: med(100 * u[t]["images"] / u[t]["seconds"] * flops[t] / 1e9 / u["ceiling"] for u in turns)
               for t in ("xrlab", "xrlab_cls")}
        print(f"| {preset} | {batch} | {size} | {rate['xrlab']:.2f} / {rate['xrlab_cls']:.2f} | {rate['pytorch']:.2f} | {rate['onnxruntime']:.2f} | "
              f"{rate['xrlab'] / best:.2f}× / {rate['xrlab_cls'] / best:.2f}× | {spread('xrlab')} / {spread('xrlab_cls')} | "
              f"{gf['xrlab']:.1f} / {gf['xrlab_cls']:.1f} | "
              f"{100 * gf['xrlab'] / ceiling:.1f}% / {100 * gf['xrlab_cls'] / ceiling:.1f}% of {ceiling:.0f} "
              f"(per turn {pct['xrlab']:.1f}% / {pct['xrlab_cls']:.1f}%) | "
              f"{summary['xrlab']['peak_rss_mb']:.0f} / "
              f"{summary['pytorch']['peak_rss_mb']:.0f} / {summary['onnxruntime']['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
