"""ViT encoder speed: xrlab vs PyTorch (eager, inference_mode) vs ONNX Runtime, same run.

Each tool encodes the identical architecture (random weights), batch, input size and thread
count, in its own process so peak RSS is measured per tool. Prints one table: images/s, the
ratio of xrlab to the faster peer, achieved GFLOP/s, percent of the sgemm ceiling measured in
the same run at the model's own matrix shapes (OpenBLAS, via `xrlab bench`), peak RSS.

The peers return the class-token features (timm `num_classes=0`, token pooling). xrlab runs
twice: computing every output (class token, patch tokens, patch mean) as a patch-feature
embedding does, and with `--class-token-only` (the same output as the peers: its last block's
attention, projection and MLP run on the class token alone; its GFLOP/s counts that work).

Rounds: each workload runs `--rounds` times per tool, alternating the order (xrlab first, then
the peers first), so a machine whose speed drifts over minutes slows every tool alike; the table
gives each tool's median images/s, the median of the per-round ratios and of the per-round
percentages of that round's sgemm ceiling (the ceiling column: its median), and every round's
ratio.

Usage (from the repository root, after `swift build -c release`):
    pip install onnxruntime onnx onnxscript    # torch==2.13.0+cpu and timm as for the fixtures
    python3 bench/vit_peers.py [--seconds 4] [--rounds 3] [--only vitBase16]
"""
import argparse, json, os, resource, statistics, subprocess, sys, time, types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XRLAB = os.path.join(ROOT, ".build", "release", "xrlab")
OUT = os.path.join(ROOT, ".build", "bench-vit")
WORKLOADS = [  # (preset, batch, size)
    ("vitTiny16", 1, 224), ("vitTiny16", 8, 224),
    ("vitSmall16", 1, 224), ("vitSmall16", 8, 224),
    ("vitBase16", 1, 224), ("vitBase16", 8, 224),
    ("vitBase14at518", 1, 518),
]
ARCH = {  # preset -> timm VisionTransformer arguments (identical to xrlab's presets)
    "vitTiny16": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "vitSmall16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "vitBase16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vitBase14at518": dict(patch_size=14, embed_dim=768, depth=12, num_heads=12),
}


def build(preset, size):
    import torch
    for m in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(m, types.ModuleType(m))
    import timm
    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(img_size=size, num_classes=0, **ARCH[preset]).eval()


def child(tool, preset, batch, size, seconds):
    """Runs in a fresh process: time one tool, print JSON."""
    import numpy as np
    import torch
    torch.set_num_threads(2)
    x = torch.randn(batch, 3, size, size)
    if tool == "pytorch":
        model = build(preset, size)
        run = lambda: model(x)
        ctx = torch.inference_mode()
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
        ctx = torch.inference_mode()
    with ctx:
        run()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3:
            run()
            n += 1
        dt = time.perf_counter() - t0
    print(json.dumps({"tool": tool, "images_per_s": n * batch / dt, "peak_rss_mb": peak_rss_mb()}))


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
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), path, input_names=["pixels"], output_names=["features"],
                      dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False)


def flops(preset, batch, size):
    a = ARCH[preset]
    p, c, depth = a["patch_size"], a["embed_dim"], a["depth"]
    n = (size // p) ** 2
    t = n + 1
    return depth * (2 * t * (4 * c * c + 2 * c * 4 * c) + 4 * t * t * c) + 2 * n * c * 3 * p * p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only")
    ap.add_argument("--child", nargs=4)
    args = ap.parse_args()
    if args.rounds < 1 or args.seconds < 0:
        ap.error(f"--rounds must be at least 1 and --seconds at least 0 (got {args.rounds}, {args.seconds})")
    if args.child:
        tool, preset, batch, size = args.child
        child(tool, preset, int(batch), int(size), args.seconds)
        return
    os.makedirs(OUT, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", MKL_NUM_THREADS="2")
    rows = []
    for preset, batch, size in WORKLOADS:
        if args.only and args.only != preset:
            continue
        export(preset, size)

        def peer(tool):
            out = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--child", tool, preset, str(batch), str(size)],
                                 env=env, capture_output=True, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])

        def xrlab(extra):
            out = subprocess.run([XRLAB, "bench", "--preset", preset, "--batch", str(batch), "--size", str(size),
                                  "--seconds", str(args.seconds), "--threads", "2"] + extra, env=env, capture_output=True, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])

        rounds = []
        for r in range(args.rounds):
            res = {}
            order = ["xrlab", "xrlab_cls", "pytorch", "onnxruntime"]
            for tool in (order if r % 2 == 0 else order[::-1]):
                res[tool] = (xrlab([]) if tool == "xrlab" else xrlab(["--class-token-only", "--no-ceiling"]) if tool == "xrlab_cls"
                             else peer(tool))
            rounds.append(res)
            x, xc, pt, ox = res["xrlab"], res["xrlab_cls"], res["pytorch"], res["onnxruntime"]
            best = max(pt["images_per_s"], ox["images_per_s"])
            print(f"{preset:>15} b{batch} {size}px round {r + 1}: xrlab {x['images_per_s']:7.2f} img/s (class token only {xc['images_per_s']:7.2f})  "
                  f"pytorch {pt['images_per_s']:7.2f}  onnxruntime {ox['images_per_s']:7.2f}  "
                  f"ratio {x['images_per_s'] / best:5.2f}x / {xc['images_per_s'] / best:5.2f}x  sgemm {x['sgemm_gflops']:.0f}", flush=True)
        rows.append((preset, batch, size, rounds))
    print()
    print(f"{args.rounds} rounds of {args.seconds:g} s per tool; xrlab columns: every output / class token only (the peers' output).")
    print()
    print("| model | batch | px | xrlab img/s | PyTorch img/s | ONNX Runtime img/s | xrlab / faster peer | per round | xrlab GFLOP/s | % of sgemm | peak RSS MB (xrlab / PyTorch / ORT) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    med = statistics.median
    for preset, batch, size, rounds in rows:
        def m(tool, key="images_per_s"):
            return med(r[tool][key] for r in rounds)
        def ratio(r, tool):
            return r[tool]["images_per_s"] / max(r["pytorch"]["images_per_s"], r["onnxruntime"]["images_per_s"])
        rx, rc = [ratio(r, "xrlab") for r in rounds], [ratio(r, "xrlab_cls") for r in rounds]
        ceiling = m("xrlab", "sgemm_gflops")
        # Percent of the ceiling measured in the same round, median over rounds.
        pct = lambda tool: med(100 * r[tool]["gflops"] / r["xrlab"]["sgemm_gflops"] for r in rounds)
        rss = lambda tool: max(r[tool]["peak_rss_mb"] for r in rounds)
        print(f"| {preset} | {batch} | {size} | {m('xrlab'):.2f} / {m('xrlab_cls'):.2f} | {m('pytorch'):.2f} | {m('onnxruntime'):.2f} | "
              f"{med(rx):.2f}× / {med(rc):.2f}× | {', '.join(f'{a:.2f}/{b:.2f}' for a, b in zip(rx, rc))} | "
              f"{m('xrlab', 'gflops'):.1f} / {m('xrlab_cls', 'gflops'):.1f} | "
              f"{pct('xrlab'):.1f}% / {pct('xrlab_cls'):.1f}% of {ceiling:.0f} | "
              f"{max(rss('xrlab'), rss('xrlab_cls')):.0f} / {rss('pytorch'):.0f} / {rss('onnxruntime'):.0f} |")

if __name__ == "__main__":
    main()
