"""The driver side of interleaved turns (bench/vit_peers.py, bench/train_peers.py): one process per
tool, kept loaded, answering one JSON line per request line (`run SECONDS`, …); at the end of its
input each prints a summary line and exits."""
import json, subprocess


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
