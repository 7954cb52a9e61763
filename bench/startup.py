"""How fast the `visioncourse` command answers when it has no training to do: the median wall time, over N fresh
processes, of `visioncourse --help`, of a verb's help, of `visioncourse datasets` and of an invalid option.
Usage: python bench/startup.py [N]   (default N=5)"""
import statistics, subprocess, sys, time
from pathlib import Path

EXE = str(Path(sys.executable).parent/'visioncourse')
CASES = [('visioncourse --help', ['--help'], 0), ('visioncourse train --help', ['train', '--help'], 0),
         ('visioncourse datasets', ['datasets'], 0), ('visioncourse train pets --epochs -1', ['train', 'pets', '--epochs', '-1'], 2)]

def median_time(args, status, n):
    "Median seconds of `n` runs of the command with `args`, each checked for its exit `status`."
    times = []
    for _ in range(n):
        start = time.perf_counter()
        res = subprocess.run([EXE, *args], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        assert res.returncode == status, (args, res.returncode, res.stderr[-500:])
    return statistics.median(times)

if __name__ == '__main__':
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for name, args, status in CASES: print(f"{name:40} median {median_time(args, status, n):.2f} s over {n} runs")
