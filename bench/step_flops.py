"""Matrix-product operations of one training step (xrlab's `bench train` workloads), counted.

2·m·n·k per product; elementwise work is not counted. ViT (timm layout) at 224 px, patch 16,
batch 8 by default. Per block: linear layers 2·R·(4C² + 2CM) with R = batch · tokens, attention
4·batch·T²·C; an input gradient costs what its forward product costs, a weight gradient the
same again, attention's backward twice its forward. With the class-token last block (what
xrlab does under class-token pooling) that block's attention, projection and MLP run on one
row per image: only its qkv projection (2·R·3C²) counts.

Usage: python3 bench/step_flops.py [--preset vitSmall16] [--batch 8]
"""
import argparse

ARCH = {"vitTiny16": 192, "vitSmall16": 384, "vitBase16": 768}


def counts(C, batch, depth=12, patch=16, size=224):
    N = (size // patch) ** 2
    T, R, M = N + 1, batch * (N + 1), 4 * C
    lin = 2 * R * (4 * C * C + 2 * C * M)
    att = 4 * batch * T * T * C
    qkv = 2 * R * 3 * C * C
    embed = 2 * batch * N * 3 * patch * patch * C
    block_no_qkv = lin - qkv   # proj + fc1 + fc2 (block 0 under LoRA: nothing trains below its qkv)
    out = {}
    for shortcut in (False, True):
        last_fwd = qkv if shortcut else lin + att
        fwd = (depth - 1) * (lin + att) + last_fwd + embed
        # LoRA on every block's qkv: input gradients through every block above block 0's qkv,
        # none for block 0's qkv input; attention backward in every block.
        last_dx = qkv if shortcut else lin
        lora = fwd + (depth - 2) * lin + block_no_qkv + last_dx + ((depth - 1) if shortcut else depth) * 2 * att
        # Last 2 blocks: each block's input and weight gradients (block depth-2 still takes its qkv
        # input gradient: its norm1 trains) and attention backward; with the shortcut, the last
        # block's only full-size gradients are its qkv's.
        second = 2 * lin + 2 * att
        last = 2 * qkv if shortcut else 2 * lin + 2 * att
        last2 = fwd + second + last
        out[shortcut] = {"lora": lora / 1e9, "last2": last2 / 1e9, "forward": fwd / 1e9}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="vitSmall16", choices=sorted(ARCH))
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if args.batch < 1:
        ap.error(f"--batch must be at least 1 (got {args.batch})")
    c = counts(ARCH[args.preset], args.batch)
    print(f"{args.preset}, batch {args.batch}, 224 px: GFLOP per step (matrix products)")
    print("| step | every row in the last block | class-token last block |")
    print("|---|---:|---:|")
    for k in ("forward", "lora", "last2"):
        print(f"| {k} | {c[False][k]:.1f} | {c[True][k]:.1f} |")


if __name__ == "__main__":
    main()
