"""Two xrlab binaries on the same benchmark, in alternating pairs: how the docs' before / after
figures for a change are measured on a machine whose speed drifts (each pair runs back to back,
the order alternating, and the ratio is taken within the pair).

Build the old binary from its commit first, e.g.
    git worktree add /tmp/old <commit> && (cd /tmp/old && swift build -c release)
then
    python3 bench/ab_pairs.py /tmp/old/.build/release/xrlab .build/release/xrlab --pairs 8 -- \\
        bench --preset vitSmall16 --batch 8 --seconds 2 --no-ceiling --class-token-only
Works with `xrlab bench [encoder]` (images_per_s) and `xrlab bench train` (seconds_per_step); for
an old binary from before the bench commands were nested, pass `bench …` or `bench-train …`, which
both binaries run. Prints each pair and the median and range of the speed-up new ÷ old.
"""
import argparse, json, statistics, subprocess, sys


def speed(binary, args):
    """The run's speed: images per second, or steps per second for bench train."""
    out = subprocess.run([binary] + args, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if "images_per_s" in result:
        return result["images_per_s"]
    return 1 / result["seconds_per_step"]


def main():
    ap = argparse.ArgumentParser(usage="%(prog)s OLD NEW [--pairs N] -- bench [encoder|train]|bench-train OPTIONS…")
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--pairs", type=int, default=8)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a, args = ap.parse_args(argv[:cut]), argv[cut + 1:]   # after --: the xrlab subcommand and its options
    if a.pairs < 1 or not args or args[0] not in ("bench", "bench-train"):
        ap.error("need --pairs ≥ 1 and, after --, `bench …`, `bench train …` or `bench-train …`")
    ratios = []
    for i in range(a.pairs):
        if i % 2 == 0:
            old, new = speed(a.old, args), speed(a.new, args)
        else:
            new, old = speed(a.new, args), speed(a.old, args)
        ratios.append(new / old)
        print(f"pair {i + 1}: old {old:.4g}, new {new:.4g} per s, new ÷ old {new / old:.3f}", flush=True)
    print(f"new ÷ old: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}–{max(ratios):.3f} over {a.pairs} pairs")


if __name__ == "__main__":
    main()
