"""Training-step speed: xrlab vs PyTorch + PEFT, same run, same machine.

ViT-S/16 (timm `vit_small_patch16_224` architecture, random weights, 2-class head), batch 8,
224 px, 2 threads; one step = forward, softmax cross-entropy, backward, AdamW update.
Methods: LoRA r=8 alpha=16 on the fused qkv projections (+ head), and the last 2 blocks
(+ final norm + head). Each tool runs in its own process, so peak RSS (VmHWM) is per tool.

Interleaved turns: both tools' processes start, build the model and take a warm-up step once per
method, then take turns running steps for `--turn-seconds` (at least one step each), `--turns`
turns per tool, alternating which goes first, with a short pause between turns. On a machine
whose speed drifts within seconds (a shared VM) both then sample the same conditions. Each tool's
seconds per step is its time over its steps across all turns; the table also gives the median
and range of the per-turn speed-ups.

Usage (from the repository root, after `swift build -c release`):
    pip install torch==2.13.0+cpu timm==1.0.31 transformers==5.23.0 peft==0.21.2
    python3 bench/train_peers.py [--turns 6] [--turn-seconds 3] [--preset vitSmall16]
"""
import argparse, json, os, statistics, sys, time, types

from turns import Worker, serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XRLAB = os.path.join(ROOT, ".build", "release", "xrlab")
ARCH = {"vitTiny16": (192, 3), "vitSmall16": (384, 6), "vitBase16": (768, 12)}


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def torch_child(method, preset, batch, threads):
    """Runs in a fresh process: build the model, take a warm-up step, then serve timed turns on
    stdin (`run SECONDS` → {"steps", "seconds"}); at the end of input print the summary."""
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
    total_steps, total = serve(step, "steps", 1)
    trainable = sum(p.numel() for p in params)
    print(json.dumps({"tool": "pytorch+peft" if method == "lora" else "pytorch", "steps": total_steps, "seconds": total,
                      "trainable": trainable, "peak_rss_mb": peak_rss_mb(),
                      "versions": f"torch {torch.__version__}, peft {peft.__version__}"}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=6, help="turns per tool and method")
    ap.add_argument("--turn-seconds", type=float, default=3.0, help="seconds per turn (at least one step)")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between turns")
    ap.add_argument("--preset", default="vitSmall16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--method", default="lora")
    args = ap.parse_args()
    if args.turns < 1 or args.turn_seconds < 0 or args.pause < 0 or args.batch < 1 or args.threads < 1:
        ap.error(f"--turns, --batch and --threads must be at least 1 and --turn-seconds, --pause at least 0")
    if args.child:
        torch_child(args.method, args.preset, args.batch, args.threads)
        return
    common = ["--preset", args.preset, "--batch", str(args.batch), "--threads", str(args.threads)]
    rows = []
    for method in ("lora", "last2"):
        workers = {"xrlab": Worker([XRLAB, "bench", "train", "--method", method, "--serve"] + common),
                   "pytorch": Worker([sys.executable, __file__, "--child", "--method", method] + common)}
        for w in workers.values():       # wait until both have built the model and warmed up
            w.ask("run 0")
        turns = []
        for k in range(args.turns):
            turn = {}
            for tool in (("xrlab", "pytorch") if k % 2 == 0 else ("pytorch", "xrlab")):
                time.sleep(args.pause)
                turn[tool] = workers[tool].ask(f"run {args.turn_seconds}")
            turns.append(turn)
            sx, sp = (turn[t]["seconds"] / turn[t]["steps"] for t in ("xrlab", "pytorch"))
            print(f"{method} turn {k + 1}: xrlab {sx:.3f} s/step, PyTorch {sp:.3f}, speed-up {sp / sx:.2f}x", flush=True)
        summary = {tool: w.close() for tool, w in workers.items()}
        rows.append((method, turns, summary))
    print()
    print(f"{args.preset}, batch {args.batch}, 224 px, {args.threads} threads, {args.turns} interleaved turns of {args.turn_seconds:g} s; "
          f"{rows[0][2]['pytorch']['versions']}")
    print()
    print("| method | xrlab s/step | PyTorch s/step | speed-up (PyTorch ÷ xrlab) | per turn: median (range) | trainable (xrlab / PyTorch) | peak RSS MB (xrlab / PyTorch) |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for method, turns, summary in rows:
        per_step = {t: sum(u[t]["seconds"] for u in turns) / sum(u[t]["steps"] for u in turns) for t in ("xrlab", "pytorch")}
        ratios = [(u["pytorch"]["seconds"] / u["pytorch"]["steps"]) / (u["xrlab"]["seconds"] / u["xrlab"]["steps"]) for u in turns]
        xr, pt = summary["xrlab"], summary["pytorch"]
        print(f"| {method} | {per_step['xrlab']:.3f} | {per_step['pytorch']:.3f} | {per_step['pytorch'] / per_step['xrlab']:.2f}× | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | {xr['trainable']:,} / {pt['trainable']:,} | "
              f"{xr['peak_rss_mb']:.0f} / {pt['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
