"""Report decoder speed: xrlab vs PyTorch + transformers, same run, same machine.

A GPT-2-style decoder with cross-attention (6 layers, width 384, 6 heads, vocabulary 8,000) over
197 visual tokens of width 384 (projected to the decoder width): one training step (batch 8,
128 tokens; forward, LM loss, backward, AdamW) and greedy decoding of 128 tokens at batch 1 with a
key/value cache. Each tool in its own process; 2 threads. `--visual-input prefix` runs the
visual-prefix variant instead: plain GPT-2 blocks over [197 projected visual tokens; text]
(PyTorch: `inputs_embeds`, the prefix never a label), decoding after the prefix is cached.

Interleaved turns (bench/turns.py): both processes build the model and take a warm-up step, then
take `--turns` turns each of training steps (`--seconds` per tool in all, at least one step per
turn), alternating which goes first, so both sample the same machine conditions; the speed-up is
taken per turn (median and range) and over all turns. Decoding follows, one turn each of
`--seconds`. `--xrlab-products packed` runs xrlab's training-step products on the packed kernel
instead of OpenBLAS sgemm (an A/B in one binary).

Usage (from the repository root, after `swift build -c release`):
    pip install torch==2.13.0+cpu transformers==5.23.0
    python3 bench/report_peers.py [--seconds 10] [--turns 5] [--visual-input prefix]
(XRLAB_BIN=… times another xrlab build.)
"""
import argparse, json, os, statistics, sys, time, types

from turns import Worker, serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XRLAB = os.environ.get("XRLAB_BIN") or os.path.join(ROOT, ".build", "release", "xrlab")


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def torch_child(threads, prefix):
    import torch
    torch.set_num_threads(threads)
    for m in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules.setdefault(m, types.ModuleType(m))
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=8000, n_positions=512 if prefix else 256, n_embd=384, n_layer=6, n_head=6, add_cross_attention=not prefix,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    proj = torch.nn.Linear(384, 384)
    params = list(model.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    vis = torch.randn(8, 197, 384)
    ids = torch.randint(0, 8000, (8, 128))

    def step():
        opt.zero_grad(set_to_none=True)
        if prefix:
            emb = torch.cat([proj(vis), model.transformer.wte(ids)], dim=1)
            labels = torch.cat([torch.full((8, 197), -100), ids], dim=1)
            labels[:, 197] = -100
            out = model(inputs_embeds=emb, labels=labels)
        else:
            out = model(input_ids=ids, encoder_hidden_states=proj(vis), labels=ids)
        out.loss.backward()
        opt.step()

    model.train()
    step()

    def decoding(seconds):
        model.eval()
        with torch.inference_mode():
            enc = proj(vis[:1])

            def decode():
                past, cur, out = None, torch.tensor([[0]]), 0
                if prefix:
                    past = model(inputs_embeds=enc, use_cache=True).past_key_values
                for _ in range(128):
                    if prefix:
                        o = model(input_ids=cur, past_key_values=past, use_cache=True)
                    else:
                        o = model(input_ids=cur, encoder_hidden_states=enc, past_key_values=past, use_cache=True)
                    past = o.past_key_values
                    cur = o.logits[:, -1].argmax(-1, keepdim=True)
                    out += 1
                return out

            decode()
            produced, t = 0, time.perf_counter()
            while time.perf_counter() - t < seconds or produced == 0:
                produced += decode()
            tps = produced / (time.perf_counter() - t)
        model.train()
        return {"decode_tokens_per_s": tps}

    steps, total = serve(step, "steps", 1, {"decode": decoding})
    print(json.dumps({"tool": "pytorch", "steps": steps, "seconds": total, "peak_rss_mb": peak_rss_mb(),
                      "versions": f"torch {torch.__version__}, transformers {transformers.__version__}"}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10, help="each tool's training time over all turns, and its decoding time")
    ap.add_argument("--turns", type=int, default=5, help="interleaved training turns per tool")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between turns")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--visual-input", choices=["cross_attention", "prefix"], default="cross_attention")
    ap.add_argument("--xrlab-products", choices=["packed", "blas"], default="blas")
    a = ap.parse_args()
    if a.turns < 1 or a.seconds < 0 or a.pause < 0 or a.threads < 1:
        ap.error("--turns and --threads must be at least 1, --seconds and --pause at least 0")
    if a.child:
        torch_child(a.threads, a.visual_input == "prefix")
        return
    common = ["--threads", str(a.threads), "--visual-input", a.visual_input]
    workers = {"xrlab": Worker([XRLAB, "bench", "report", "--serve", "--products", a.xrlab_products] + common),
               "pytorch": Worker([sys.executable, __file__, "--child"] + common)}
    for w in workers.values():  # wait until both have built the model and warmed up
        w.ask("run 0")
    turns = []
    for k in range(a.turns):
        turn = {}
        for tool in (("xrlab", "pytorch") if k % 2 == 0 else ("pytorch", "xrlab")):
            time.sleep(a.pause)
            turn[tool] = workers[tool].ask(f"run {a.seconds / a.turns}")
        turns.append(turn)
        sx, sp = (turn[t]["seconds"] / turn[t]["steps"] for t in ("xrlab", "pytorch"))
        print(f"turn {k + 1}: xrlab {sx:.3f} s/step, PyTorch {sp:.3f}, speed-up {sp / sx:.2f}x", flush=True)
    decoding = {}
    for tool in ("xrlab", "pytorch"):
        time.sleep(a.pause)
        decoding[tool] = workers[tool].ask(f"decode {a.seconds}")["decode_tokens_per_s"]
    summary = {tool: w.close() for tool, w in workers.items()}
    per_step = {t: sum(u[t]["seconds"] for u in turns) / sum(u[t]["steps"] for u in turns) for t in ("xrlab", "pytorch")}
    ratios = [(u["pytorch"]["seconds"] / u["pytorch"]["steps"]) / (u["xrlab"]["seconds"] / u["xrlab"]["steps"]) for u in turns]
    xr, pt = summary["xrlab"], summary["pytorch"]
    print()
    print(f"report decoder (6 × 384, vocabulary 8,000, 197 visual tokens, {a.visual_input.replace('_', '-')}), {a.threads} threads, "
          f"{a.turns} interleaved turns; {pt['versions']}; xrlab products {xr['products']}, OpenBLAS {xr['blas_core']}")
    print()
    print("| | xrlab | PyTorch | xrlab ÷ PyTorch speed | per turn: median (range) |")
    print("|---|---:|---:|---:|---|")
    print(f"| training step, batch 8 × 128 tokens (s) | {per_step['xrlab']:.3f} | {per_step['pytorch']:.3f} | "
          f"{per_step['pytorch'] / per_step['xrlab']:.2f}× | {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")
    print(f"| greedy decoding, batch 1, KV cache (tokens/s) | {decoding['xrlab']:.1f} | {decoding['pytorch']:.1f} | "
          f"{decoding['xrlab'] / decoding['pytorch']:.2f}× | |")
    print(f"| peak RSS (MB) | {xr['peak_rss_mb']:.0f} | {pt['peak_rss_mb']:.0f} | | |")


if __name__ == "__main__":
    main()
