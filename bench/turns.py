"""Interleaved turns (bench/vit_peers.py, bench/train_peers.py): one process per tool, kept loaded,
answering one JSON line per request line (`run SECONDS`, …); at the end of its input each prints a
summary line and exits. `Worker` is the driver's side, `serve` a Python tool's (xrlab's is
`--serve` on `xrlab bench encoder` and `xrlab bench train`)."""
import json, subprocess, sys, time


def serve(work, unit, per_call, commands=None):
    """Answer `run SECONDS` lines on stdin: call `work` until that long has passed (at least once),
    print {unit: count, "seconds": elapsed}. A line `NAME SECONDS` naming one of `commands` prints
    what `commands[NAME](SECONDS)` returns. Returns (total count, total seconds) at the end of input."""
    count, total, commands = 0, 0.0, commands or {}
    for line in sys.stdin:
        words = line.split()
        if len(words) == 2 and words[0] in commands:
            print(json.dumps(commands[words[0]](float(words[1]))), flush=True)
            continue
        if len(words) != 2 or words[0] != "run":
            known = " or ".join(f"`{c} SECONDS`" for c in ["run"] + sorted(commands))
            sys.exit(f"expected {known}, got {line!r}")
        seconds, n, start = float(words[1]), 0, time.perf_counter()
        while n < 1 or time.perf_counter() - start < seconds:
            work()
            n += 1
        elapsed = time.perf_counter() - start
        count, total = count + n * per_call, total + elapsed
        print(json.dumps({unit: n * per_call, "seconds": elapsed}), flush=True)
    return count, total


class Worker:
    """One tool's process, answering one JSON line per request line."""

    def __init__(self, argv, env=None):
        self.argv = argv
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"{' '.join(self.argv)} stopped (exit code {self.proc.wait()})")
        return json.loads(answer)

    def close(self):
        """End the input; the summary line the process prints last."""
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        if self.proc.wait() != 0:
            raise RuntimeError(f"{' '.join(self.argv)} failed with exit code {self.proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])
