"""Training-step speed: xrlab vs PyTorch + PEFT, same run, same machine.

ViT-S/16 (timm `vit_small_patch16_224` architecture, random weights, 2-class head), batch 8,
224 px, 2 threads; one step = forward, softmax cross-entropy, backward, AdamW update.
Methods: LoRA r=8 alpha=16 on the fused qkv projections (+ head), and the last 2 blocks
(+ final norm + head). Each tool runs in its own process, so peak RSS (VmHWM) is per tool.

Rounds: each method runs `--rounds` times per tool, alternating which tool goes first, so a
machine whose speed drifts over minutes (a shared VM) slows both alike; the table gives each
tool's median seconds per step and the median of the per-round speed-ups, and every round's
figures follow it.

Usage (from the repository root, after `swift build -c release`):
    pip install torch==2.13.0+cpu timm==1.0.31 transformers==5.23.0 peft==0.21.2
    python3 bench/train_peers.py [--seconds 8] [--rounds 3] [--preset vitSmall16]
"""
import argparse, json, os, statistics, subprocess, sys, time, types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XRLAB = os.path.join(ROOT, ".build", "release", "xrlab")
ARCH = {"vitTiny16": (192, 3), "vitSmall16": (384, 6), "vitBase16": (768, 12)}


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def torch_child(method, preset, batch, seconds, threads):
    import torch
    torch.set_num_threads(threads)
    for m in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(m, types.ModuleType(m))
    import timm, peft
    dim, heads = ARCH[preset]
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(img_size=224, patch_size=16, embed_dim=dim, depth=12,
                                                             num_heads=heads, num_classes=2)
    if method == "lora":
        cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["qkv"], modules_to_save=["head"])
        model = peft.get_peft_model(model, cfg)
    else:
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("blocks.10.") or n.startswith("blocks.11.") or n.startswith("norm.") or n.startswith("head."))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.05)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.arange(batch) % 2

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        step()
        n += 1
    el = time.perf_counter() - start
    trainable = sum(p.numel() for p in params)
    return {"tool": "pytorch+peft" if method == "lora" else "pytorch", "seconds_per_step": el / n, "steps": n,
            "trainable": trainable, "peak_rss_mb": peak_rss_mb(), "versions": f"torch {torch.__version__}, peft {peft.__version__}"}


def run_child(args):
    out = subprocess.run([sys.executable, __file__, "--child"] + args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--preset", default="vitSmall16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--method", default="lora")
    args, rest = ap.parse_known_args()
    if args.rounds < 1 or args.seconds < 0:
        ap.error(f"--rounds must be at least 1 and --seconds at least 0 (got {args.rounds}, {args.seconds})")
    if args.child:
        print(json.dumps(torch_child(args.method, args.preset, args.batch, args.seconds, args.threads)))
        return
    common = ["--preset", args.preset, "--batch", str(args.batch), "--seconds", str(args.seconds), "--threads", str(args.threads)]

    def xrlab(method):
        return json.loads(subprocess.run([XRLAB, "bench-train", "--method", method] + common,
                                         capture_output=True, text=True, check=True).stdout)

    rows = []
    for method in ("lora", "last2"):
        rounds = []
        for r in range(args.rounds):
            if r % 2 == 0:
                xr = xrlab(method); pt = run_child(["--method", method] + common)
            else:
                pt = run_child(["--method", method] + common); xr = xrlab(method)
            rounds.append((xr, pt))
            print(f"{method} round {r + 1}: xrlab {xr['seconds_per_step']:.3f} s/step, PyTorch {pt['seconds_per_step']:.3f}, "
                  f"speed-up {pt['seconds_per_step'] / xr['seconds_per_step']:.2f}x", flush=True)
        rows.append((method, rounds))
    print()
    print(f"{args.preset}, batch {args.batch}, 224 px, {args.threads} threads, {args.rounds} rounds of {args.seconds:g} s; {rows[0][1][0][1]['versions']}")
    print(f"| method | xrlab s/step | PyTorch s/step | speed-up (PyTorch ÷ xrlab) | per round | trainable (xrlab / PyTorch) | peak RSS MB (xrlab / PyTorch) |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for method, rounds in rows:
        ratios = [pt["seconds_per_step"] / xr["seconds_per_step"] for xr, pt in rounds]
        xs = statistics.median(xr["seconds_per_step"] for xr, _ in rounds)
        ps = statistics.median(pt["seconds_per_step"] for _, pt in rounds)
        xr, pt = rounds[0]
        print(f"| {method} | {xs:.3f} | {ps:.3f} | {statistics.median(ratios):.2f}× | {', '.join(f'{r:.2f}' for r in ratios)} "
              f"| {xr['trainable']:,} / {pt['trainable']:,} | {max(x['peak_rss_mb'] for x, _ in rounds):.0f} / {max(p['peak_rss_mb'] for _, p in rounds):.0f} |")

if __name__ == "__main__":
    main()
