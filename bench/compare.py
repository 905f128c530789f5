"""Two checkouts' ingest compared in one run, their servers up side by side and the
posters switching between them every few seconds.

    .venv/bin/python bench/compare.py BASELINE CANDIDATE [--slices 12] [--seconds 5]

BASELINE and CANDIDATE are checkouts (git worktrees) holding this bench/; for an older
commit (docs/PERFORMANCE.md):

    git worktree add /tmp/base <commit>
    rm -rf /tmp/base/bench && cp -r bench /tmp/base/ && cp tests/services.py /tmp/base/tests/
    .venv/bin/python bench/compare.py /tmp/base .

Each serves the `ingest` scenario from its own code and database (`bench/run.py --serve
ingest` in that tree); the posters are the scenario's (16 flat out, single events, then
batches of 100, over 100 stations).

Why: on a shared machine, two 20-second `bench/run.py ingest` runs of the same code one
after the other differed by up to 21.5 % (docs/PERFORMANCE.md, eighteenth session): the
machine's speed moves within a minute, so a change's budget could not be read from one
pair of runs. Here the load goes to one tree, then the other, in slices of a few seconds,
A B A B ... A, so the machine's moves fall on both alike. Each B slice gives a ratio,
against the mean of the A slices either side of it; the result line gives the ratio of
the totals, and the median and range of those ratios (neighbouring ratios share an A
slice: the range shows the spread, it is no confidence interval). Compare a tree with
itself (the same commit checked out twice) to see the method's own noise.

What it cannot separate:
- Both trees run on this checkout's virtualenv, each with its own tests/server.py: a
  change to the dependencies is not compared.
- Only the tree being posted to serves requests, but PostgreSQL's background work (WAL
  writer, autovacuum) for the other tree's last slice may run in this one, and the
  `postgres=` CPU counts the whole server. Run beside plain alternating `bench/run.py
  ingest` runs when a change moves work into the background.
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import Stats  # noqa: E402
from bench.run import DEFAULTS, CpuMeter, cpu_line, post_ingest  # noqa: E402


class Tree:
    """One checkout's ingest servers, and what its slices took."""

    def __init__(self, label: str, path: Path, stations: int):
        self.label, self.path = label, path
        self.process = subprocess.Popen(
            [sys.executable, "bench/run.py", "--serve", "--stations", str(stations), "ingest"],
            cwd=path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        while line and not line.startswith("{"):  # anything printed before: pass it on
            print(f"{label}: {line}", end="")
            line = self.process.stdout.readline()
        if not line:
            self.process.wait(60)
            raise SystemExit(f"{path}: `bench/run.py --serve ingest` did not start (see above)")
        where = json.loads(line)
        self.port, self.key, self.pids = where["port"], where["key"], where["pids"]
        self.events = 0
        self.seconds = 0.0
        self.cpu: Counter = Counter()
        self.statuses: Counter = Counter()

    async def post(self, args, batch: int) -> float:
        """One slice of load; its events per second (counted into the totals). A tree
        whose servers stopped, or that accepted nothing, ends the comparison: a rate of
        0 would read as a 100 % fall."""
        if self.process.poll() is not None:
            raise SystemExit(f"{self.path}: its servers stopped (exit {self.process.returncode})")
        stats = Stats()
        meter = CpuMeter(self.pids)
        elapsed = await post_ingest(self.port, self.key, stats, args, batch)
        self.cpu.update(meter.spent())
        if not stats.accepted:
            raise SystemExit(f"{self.path}: a slice accepted no event: {stats.errors}")
        self.events += stats.accepted
        self.seconds += elapsed
        self.statuses.update(stats.statuses)
        return stats.accepted / elapsed

    def reset(self) -> None:
        self.events, self.seconds = 0, 0.0
        self.cpu.clear()
        self.statuses.clear()

    def stop(self) -> None:
        self.process.stdin.close()  # bench/run.py --serve stops its servers
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()  # (its servers' launcher stops them when it goes)
            self.process.wait()


async def compare(a: Tree, b: Tree, args, batch: int) -> list[str]:
    warm_up = argparse.Namespace(**{**vars(args), "duration": 2.0})
    for tree in (a, b):  # connections, prepared statements and caches: not counted
        await tree.post(warm_up, batch)
        tree.reset()
    # A B A B ... A: every slice follows one of the other tree, and each of B's is
    # compared with the mean of the A slices either side of it, so a machine speeding up
    # or slowing down through the run favours neither.
    a_rates = [await a.post(args, batch)]
    ratios = []
    for _ in range(args.slices):
        b_rate = await b.post(args, batch)
        a_rates.append(await a.post(args, batch))
        ratios.append(100 * b_rate / statistics.fmean(a_rates[-2:]))
    total_a, total_b = a.events / a.seconds, b.events / b.seconds
    lines = [
        f"compare ingest(batch={batch}): {args.slices} B slices of {args.duration:g} s | "
        f"B/A {100 * total_b / total_a:.1f} % of the totals; slices: median "
        f"{statistics.median(ratios):.1f} %, {min(ratios):.1f} to {max(ratios):.1f} %"
    ]
    for tree, total in ((a, total_a), (b, total_b)):
        errors = {s: n for s, n in tree.statuses.items() if s not in (200, 201)}
        lines.append(
            f"  {tree.label} {tree.path}: {total:.0f} events/s"
            + (f", refused or failed: {errors}" if errors else "")
            + f" | {cpu_line(dict(tree.cpu), tree.events)}"
        )
    each = " ".join(f"{r:.1f}" for r in ratios)
    lines.append(f"  B slices, % of the A slices either side: {each}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("--slices", type=int, default=12, help="B slices per batch size")
    parser.add_argument("--seconds", type=float, default=5.0, help="one slice's length")
    parser.add_argument("--batch", type=int, choices=(1, 100), help="only this batch size")
    options = parser.parse_args()
    if options.slices < 1 or options.seconds < 1:
        # (a second or more: a slice's event ids are made from the time in seconds)
        parser.error("--slices and --seconds must be 1 or more")
    for tree in (options.baseline, options.candidate):
        if not (tree / "bench" / "run.py").is_file():
            parser.error(f"{tree} has no bench/run.py: copy this bench/ into it")
    args = argparse.Namespace(
        **{**DEFAULTS["ingest"], "duration": options.seconds, "slices": options.slices}
    )
    a = Tree("A", options.baseline.resolve(), args.stations)
    try:
        b = Tree("B", options.candidate.resolve(), args.stations)
        try:
            for batch in [options.batch] if options.batch else [1, 100]:
                for line in asyncio.run(compare(a, b, args, batch)):
                    print(line, flush=True)
        finally:
            b.stop()
    finally:
        a.stop()


if __name__ == "__main__":
    main()
