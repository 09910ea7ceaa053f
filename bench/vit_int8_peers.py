"""int8 ViT encoders: xrlab int8 vs ONNX Runtime and PyTorch dynamic quantisation, same run.

Tools (each in its own process, so peak RSS is per tool), all returning the class-token features
of the same architecture (random weights), batch, input size and thread count (2):
  xrlab_int8   `xrlab bench encoder --precision int8 --class-token-only`: the blocks' qkv, proj,
               fc1, fc2 in int8 (weights per output channel, activations per row, `int8Product`).
  xrlab_fp32   the same model at fp32 (`--precision fp32`).
  ort_int8     ONNX Runtime on the fp32 ONNX export (vit_peers.py's) quantised with
               `onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8)`.
  torch_int8   PyTorch `torch.ao.quantization.quantize_dynamic` on every nn.Linear (qint8,
               engine fbgemm), eager, inference_mode.
Interleaved turns as vit_peers.py runs them (`turns.py`): the processes start, load and warm up
once per workload, then take turns of `--turn-seconds`, the order rotating each turn.

Accuracy, measured the same way for every tool in separate processes (so it does not enter the
peak RSS): each int8 model against its own fp32 model on the same 8 random-normal images at the
workload's size, per image cosine similarity of the returned features (xrlab: `xrlab bench
encoder --check-against-fp32`, which also names the int8 kernel chosen at run time: 8-bit activations
on AVX-512 VNNI, 7-bit on the AVX2 fallback, `XRLAB_INT8_PATH=avx2` forcing it); the table gives
the worst image and the mean.

Usage (from the repository root, after `swift build -c release --product xrlab`):
    python3 bench/vit_int8_peers.py [--turns 10] [--turn-seconds 1] [--only vitBase16]
"""
import argparse, json, os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from turns import Worker, serve
import vit_peers
from vit_peers import XRLAB, OUT, build, export, peak_rss_mb

WORKLOADS = [("vitSmall16", 1, 224), ("vitSmall16", 8, 224), ("vitBase16", 1, 224), ("vitBase16", 8, 224)]
TOOLS = ["xrlab_int8", "xrlab_fp32", "ort_int8", "torch_int8"]


def quantised_onnx(preset, size):
    """The fp32 export quantised once: per-channel symmetric int8 weights, dynamic uint8 activations."""
    from onnxruntime.quantization import quantize_dynamic, QuantType
    export(preset, size)
    src, dst = os.path.join(OUT, f"{preset}_{size}.onnx"), os.path.join(OUT, f"{preset}_{size}.int8.onnx")
    if not os.path.exists(dst):
        quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8)
    return dst


def session(path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def torch_int8(model):
    import torch
    torch.backends.quantized.engine = "fbgemm"
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def child(tool, preset, batch, size):
    """A fresh process: load and warm up one peer, then serve timed turns on stdin."""
    import torch
    torch.set_num_threads(2)
    x = torch.randn(batch, 3, size, size)
    if tool == "torch_int8":
        model = torch_int8(build(preset, size))
        run = lambda: model(x)
    else:
        sess = session(quantised_onnx(preset, size))
        feed = {sess.get_inputs()[0].name: x.numpy()}
        run = lambda: sess.run(None, feed)
    with torch.inference_mode():
        run()
        serve(run, "images", batch)
    print(json.dumps({"tool": tool, "peak_rss_mb": peak_rss_mb()}), flush=True)


def cosines(a, b):
    import numpy as np
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return list((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1)))


def accuracy(tool, preset, size):
    """Per-image cosine of the int8 features to the same model's fp32 features (8 random-normal images)."""
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(1)
    x = torch.randn(8, 3, size, size)
    with torch.inference_mode():
        if tool == "torch_int8":
            model = build(preset, size)
            want = model(x).numpy()
            got = torch_int8(model)(x).numpy()
        else:
            feed = lambda s: {s.get_inputs()[0].name: x.numpy()}
            s32 = session(os.path.join(OUT, f"{preset}_{size}.onnx"))
            want = s32.run(None, feed(s32))[0]
            s8 = session(quantised_onnx(preset, size))
            got = s8.run(None, feed(s8))[0]
    c = cosines(got, want)
    print(json.dumps({"min": min(c), "mean": sum(c) / len(c)}), flush=True)


def measure_accuracy(tool, preset, size, env):
    if tool == "xrlab_int8":
        out = subprocess.run([XRLAB, "bench", "encoder", "--preset", preset, "--batch", "8", "--size", str(size), "--threads", "2",
                              "--precision", "int8", "--class-token-only", "--check-against-fp32"], env=env, capture_output=True, text=True, check=True)
        j = json.loads(out.stdout.strip().splitlines()[-1])
        return {"min": j["pooled_cosine_min"], "mean": j["pooled_cosine_mean"], "kernel": j.get("kernel", "?")}
    out = subprocess.run([sys.executable, __file__, "--accuracy", tool, preset, str(size)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=10, help="turns per tool and workload")
    ap.add_argument("--turn-seconds", type=float, default=1.0, help="seconds per turn (at least one forward pass)")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between turns")
    ap.add_argument("--only")
    ap.add_argument("--child", nargs=4)
    ap.add_argument("--accuracy", nargs=3)
    args = ap.parse_args()
    if args.turns < 1 or args.turn_seconds < 0 or args.pause < 0:
        ap.error(f"--turns must be at least 1 and --turn-seconds, --pause at least 0 (got {args.turns}, {args.turn_seconds}, {args.pause})")
    if args.child:
        tool, preset, batch, size = args.child
        return child(tool, preset, int(batch), int(size))
    if args.accuracy:
        tool, preset, size = args.accuracy
        return accuracy(tool, preset, int(size))
    os.makedirs(OUT, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", MKL_NUM_THREADS="2")
    rows = []
    for preset, batch, size in WORKLOADS:
        if args.only and args.only != preset:
            continue
        quantised_onnx(preset, size)
        acc = {t: measure_accuracy(t, preset, size, env) for t in ("xrlab_int8", "ort_int8", "torch_int8")}
        xr = [XRLAB, "bench", "encoder", "--preset", preset, "--batch", str(batch), "--size", str(size), "--threads", "2", "--serve",
              "--class-token-only"]
        workers = {
            "xrlab_int8": Worker(xr + ["--precision", "int8"], env),
            "xrlab_fp32": Worker(xr + ["--precision", "fp32"], env),
            "ort_int8": Worker([sys.executable, __file__, "--child", "ort_int8", preset, str(batch), str(size)], env),
            "torch_int8": Worker([sys.executable, __file__, "--child", "torch_int8", preset, str(batch), str(size)], env),
        }
        for tool in TOOLS:  # every process loaded and warmed up before the first turn
            workers[tool].ask("run 0")
        turns = []
        for k in range(args.turns):
            turn = {}
            for tool in TOOLS[k % len(TOOLS):] + TOOLS[:k % len(TOOLS)]:
                time.sleep(args.pause)
                turn[tool] = workers[tool].ask(f"run {args.turn_seconds}")
            turns.append(turn)
            rate = {t: turn[t]["images"] / turn[t]["seconds"] for t in TOOLS}
            print(f"{preset:>11} b{batch} turn {k + 1:2d}: xrlab int8 {rate['xrlab_int8']:7.2f} img/s  fp32 {rate['xrlab_fp32']:7.2f}  "
                  f"ORT int8 {rate['ort_int8']:7.2f}  PyTorch int8 {rate['torch_int8']:7.2f}", flush=True)
        summary = {t: workers[t].close() for t in TOOLS}
        rows.append((preset, batch, size, turns, summary, acc))
    print()
    print(f"{args.turns} interleaved turns of {args.turn_seconds:g} s per tool, 2 threads, class-token features; "
          "accuracy: cosine to the tool's own fp32 model, worst / mean of 8 random-normal images.")
    kernels = sorted({acc["xrlab_int8"].get("kernel", "?") for *_, acc in rows})
    print(f"xrlab int8 linear layers on: {', '.join(kernels)}")
    print()
    print("| model | batch | xrlab int8 img/s | xrlab fp32 | ORT int8 | PyTorch int8 | int8 / faster int8 peer: all turns, per turn median (range) "
          "| int8 / xrlab fp32 | cosine worst / mean (xrlab, ORT, PyTorch) | peak RSS MB (xrlab int8 / fp32 / ORT / PyTorch) |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|---|")
    med = statistics.median
    for preset, batch, size, turns, summary, acc in rows:
        rate = {t: sum(u[t]["images"] for u in turns) / sum(u[t]["seconds"] for u in turns) for t in TOOLS}
        r = lambda u, t: u[t]["images"] / u[t]["seconds"]
        peer = [r(u, "xrlab_int8") / max(r(u, "ort_int8"), r(u, "torch_int8")) for u in turns]
        own = [r(u, "xrlab_int8") / r(u, "xrlab_fp32") for u in turns]
        best = max(rate["ort_int8"], rate["torch_int8"])
        a = " · ".join(f"{acc[t]['min']:.5f} / {acc[t]['mean']:.5f}" for t in ("xrlab_int8", "ort_int8", "torch_int8"))
        print(f"| {preset} | {batch} | {rate['xrlab_int8']:.2f} | {rate['xrlab_fp32']:.2f} | {rate['ort_int8']:.2f} | {rate['torch_int8']:.2f} | "
              f"{rate['xrlab_int8'] / best:.2f}×, {med(peer):.2f} ({min(peer):.2f}–{max(peer):.2f}) | "
              f"{rate['xrlab_int8'] / rate['xrlab_fp32']:.2f}×, {med(own):.2f} ({min(own):.2f}–{max(own):.2f}) | {a} | "
              + " / ".join(f"{summary[t]['peak_rss_mb']:.0f}" for t in TOOLS) + " |")


if __name__ == "__main__":
    main()
