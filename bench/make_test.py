"""Time `make test` in this checkout, after set-up (the venv built): each run's steps and total, as bench/RESULTS.md reports.

Usage: python bench/make_test.py [RUNS] [make arguments...]   e.g. `python bench/make_test.py 3` or `... 1 NBTEST=nbdev_test`
Each run's full output goes to /tmp/make_test_RUN.log; a failed run is reported and timing stops there.
"""
import os, re, subprocess, sys, time

def one_run(i, make_args):
    "Run `make test` once; its total seconds, and each side-by-side step's seconds as `tools/steps.py` prints them."
    start = time.time()
    p = subprocess.run(['make', 'test', *make_args], capture_output=True, text=True)
    total = time.time() - start
    log = f'/tmp/make_test_{i}.log'
    with open(log, 'w') as f: f.write(p.stdout + p.stderr)
    if p.returncode: sys.exit(f"run {i}: make test failed (exit {p.returncode}); see {log}")
    steps = {name: int(s) for name, s in re.findall(r'===== (\S+): passed in (\d+) s', p.stdout)}
    passed = re.findall(r'(\d+ passed[^\n=]*?) in [\d.]+s', p.stdout)
    return total, steps, passed

if __name__ == '__main__':
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    make_args = sys.argv[2:]
    print(f"make test {' '.join(make_args)}: {runs} run(s) in {os.getcwd()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f} at the start")
    for i in range(1, runs + 1):
        total, steps, passed = one_run(i, make_args)
        side = max(steps.values(), default=0)
        print(f"run {i}: {total:.0f} s ({total/60:.1f} min) in all; " +
              ', '.join(f"{k} {v} s" for k, v in steps.items()) +
              f"; the checks before and after the side-by-side steps {total - side:.0f} s; pytest: {'; '.join(passed)}",
              flush=True)
