"""ViT encoder speed: xrlab vs PyTorch (eager, inference_mode) vs ONNX Runtime, same run.

Each tool encodes the identical architecture (random weights), batch, input size and thread
count, in its own process so peak RSS is measured per tool. Prints one table: images/s, the
ratio of xrlab to the faster peer, achieved GFLOP/s, percent of the sgemm ceiling measured in
the same run at the model's own matrix shapes (OpenBLAS, via `xrlab bench`), peak RSS.

The peers return the class-token features (timm `num_classes=0`, token pooling). xrlab runs
twice: computing every output (class token, patch tokens, patch mean) as a patch-feature
embedding does, and with `--class-token-only` (the same output as the peers: its last block's
attention, projection and MLP run on the class token alone; its GFLOP/s counts that work).

Usage (from the repository root, after `swift build -c release`):
    pip install onnxruntime onnx onnxscript    # torch==2.13.0+cpu and timm as for the fixtures
    python3 bench/vit_peers.py [--seconds 10] [--only vitBase16]
"""
import argparse, json, os, resource, subprocess, sys, time, types

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
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--only")
    ap.add_argument("--child", nargs=4)
    args = ap.parse_args()
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
        res = {}
        for tool in ("pytorch", "onnxruntime"):
            out = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--child", tool, preset, str(batch), str(size)],
                                 env=env, capture_output=True, text=True, check=True)
            res[tool] = json.loads(out.stdout.strip().splitlines()[-1])
        out = subprocess.run([XRLAB, "bench", "--preset", preset, "--batch", str(batch), "--size", str(size),
                              "--seconds", str(args.seconds), "--threads", "2"], env=env, capture_output=True, text=True, check=True)
        res["xrlab"] = json.loads(out.stdout.strip().splitlines()[-1])
        out = subprocess.run([XRLAB, "bench", "--preset", preset, "--batch", str(batch), "--size", str(size), "--class-token-only",
                              "--no-ceiling", "--seconds", str(args.seconds), "--threads", "2"], env=env, capture_output=True, text=True, check=True)
        res["xrlab_cls"] = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((preset, batch, size, res))
        x, xc, pt, ox = res["xrlab"], res["xrlab_cls"], res["pytorch"], res["onnxruntime"]
        best = max(pt["images_per_s"], ox["images_per_s"])
        print(f"{preset:>15} b{batch} {size}px  xrlab {x['images_per_s']:7.2f} img/s (class token only {xc['images_per_s']:7.2f})  "
              f"pytorch {pt['images_per_s']:7.2f}  onnxruntime {ox['images_per_s']:7.2f}  "
              f"ratio {x['images_per_s'] / best:5.2f}x / {xc['images_per_s'] / best:5.2f}x  "
              f"{x['gflops']:6.1f} GFLOP/s = {100 * x['gflops'] / x['sgemm_gflops']:4.1f}% of sgemm {x['sgemm_gflops']:.0f}  "
              f"RSS MB xrlab {x['peak_rss_mb']:.0f} / pytorch {pt['peak_rss_mb']:.0f} / onnxruntime {ox['peak_rss_mb']:.0f}", flush=True)
    print()
    print("xrlab columns: every output / class token only (the peers' output).")
    print()
    print("| model | batch | px | xrlab img/s | PyTorch img/s | ONNX Runtime img/s | xrlab / faster peer | xrlab GFLOP/s | % of sgemm | peak RSS MB (xrlab / PyTorch / ORT) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for preset, batch, size, r in rows:
        x, xc, pt, ox = r["xrlab"], r["xrlab_cls"], r["pytorch"], r["onnxruntime"]
        best = max(pt["images_per_s"], ox["images_per_s"])
        ceiling = x["sgemm_gflops"]
        print(f"| {preset} | {batch} | {size} | {x['images_per_s']:.2f} / {xc['images_per_s']:.2f} | {pt['images_per_s']:.2f} | {ox['images_per_s']:.2f} | "
              f"{x['images_per_s'] / best:.2f}× / {xc['images_per_s'] / best:.2f}× | {x['gflops']:.1f} / {xc['gflops']:.1f} | "
              f"{100 * x['gflops'] / ceiling:.1f}% / {100 * xc['gflops'] / ceiling:.1f}% of {ceiling:.0f} | "
              f"{max(x['peak_rss_mb'], xc['peak_rss_mb']):.0f} / {pt['peak_rss_mb']:.0f} / {ox['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
