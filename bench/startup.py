"""How fast the `visioncourse` command answers when it has no training to do: the median wall time (and CPU time,
less sensitive to a busy machine), over N fresh processes, of `visioncourse --help`, a verb's help,
`visioncourse datasets` and an invalid option; and, for reference, of importing fastai, which the command did
before parsing until it was split into a light parser (`visioncourse.cli`) and a heavy part (`visioncourse.training`).
Usage: python bench/startup.py [N]   (default N=5)"""
import os, statistics, subprocess, sys, time
from pathlib import Path

BIN = Path(sys.executable).parent
EXE = str(BIN/'visioncourse')
CASES = [('visioncourse --help',                 [EXE, '--help'], 0),
         ('visioncourse train --help',           [EXE, 'train', '--help'], 0),
         ('visioncourse datasets',               [EXE, 'datasets'], 0),
         ('visioncourse train pets --epochs -1', [EXE, 'train', 'pets', '--epochs', '-1'], 2),
         ('python -c pass (interpreter start)',  [sys.executable, '-c', 'pass'], 0),
         ('import fastai.vision.all (reference)', [sys.executable, '-W', 'ignore', '-c', 'import fastai.vision.all'], 0)]

def timed(cmd, status):
    "Wall and CPU seconds (user+sys of the child) of one run of `cmd`, checked for its exit `status`."
    before, start = os.times(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, os.times()
    assert res.returncode == status, (cmd, res.returncode, res.stderr[-500:])
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)

if __name__ == '__main__':
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, cmd, status in CASES:
        runs = [timed(cmd, status) for _ in range(n)]
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{name:38} wall {wall:6.2f} s   cpu {cpu:6.2f} s   (median of {n})")
