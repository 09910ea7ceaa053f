"""Report decoder speed: xrlab vs PyTorch + transformers, same run, same machine.

A GPT-2-style decoder with cross-attention (6 layers, width 384, 6 heads, vocabulary 8,000) over
197 visual tokens of width 384 (projected to the decoder width): one training step (batch 8,
128 tokens; forward, LM loss, backward, AdamW) and greedy decoding of 128 tokens at batch 1 with a
key/value cache. Each tool in its own process; 2 threads. `--visual-input prefix` runs the
visual-prefix variant instead: plain GPT-2 blocks over [197 projected visual tokens; text]
(PyTorch: `inputs_embeds`, the prefix never a label), decoding after the prefix is cached.

Usage (from the repository root, after `swift build -c release`):
    pip install torch==2.13.0+cpu transformers==5.23.0
    python3 bench/report_peers.py [--seconds 10] [--visual-input prefix]
"""
import argparse, json, os, subprocess, sys, time, types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XRLAB = os.path.join(ROOT, ".build", "release", "xrlab")


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def torch_child(seconds, threads, prefix):
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
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds or n < 2:
        step(); n += 1
    step_time = (time.perf_counter() - t) / n
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
    return {"tool": "pytorch", "seconds_per_step": step_time, "decode_tokens_per_s": tps, "peak_rss_mb": peak_rss_mb(),
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--visual-input", choices=["cross_attention", "prefix"], default="cross_attention")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(torch_child(a.seconds, a.threads, a.visual_input == "prefix")))
        return
    xr = json.loads(subprocess.run([XRLAB, "bench", "report", "--seconds", str(a.seconds), "--threads", str(a.threads), "--visual-input", a.visual_input],
                                   capture_output=True, text=True, check=True).stdout)
    pt = json.loads(subprocess.run([sys.executable, __file__, "--child", "--seconds", str(a.seconds), "--threads", str(a.threads), "--visual-input", a.visual_input],
                                   capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    print(f"report decoder (6 × 384, vocabulary 8,000, 197 visual tokens, {a.visual_input.replace('_', '-')}), {a.threads} threads; {pt['versions']}; "
          f"xrlab on OpenBLAS {xr['blas_core']}")
    print("| | xrlab | PyTorch | xrlab ÷ PyTorch speed |")
    print("|---|---:|---:|---:|")
    print(f"| training step, batch 8 × 128 tokens (s) | {xr['seconds_per_step']:.3f} | {pt['seconds_per_step']:.3f} | {pt['seconds_per_step'] / xr['seconds_per_step']:.2f}× |")
    print(f"| greedy decoding, batch 1, KV cache (tokens/s) | {xr['decode_tokens_per_s']:.1f} | {pt['decode_tokens_per_s']:.1f} | {xr['decode_tokens_per_s'] / pt['decode_tokens_per_s']:.2f}× |")
    print(f"| peak RSS (MB) | {xr['peak_rss_mb']:.0f} | {pt['peak_rss_mb']:.0f} | |")


if __name__ == "__main__":
    main()
