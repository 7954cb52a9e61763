"""Run test steps side by side, each writing its output to a log file, and print each step's log, status and time as
soon as it ends: what `make -j --output-sync` does, in any make (GNU make 3.81 on a Mac has no --output-sync).

    python tools/steps.py NAME 'COMMAND' [NAME 'COMMAND' ...]

Each COMMAND runs in bash; the exit status is 0 only when every step passed."""
import os, subprocess, sys, tempfile, time
from pathlib import Path

def run_steps(steps, logdir=None):
    "Start every `(name, command)` of `steps` at once; print each log when its step ends; the names of those that failed."
    logdir = Path(logdir or tempfile.mkdtemp(prefix='visioncourse-steps-'))
    running, failed = {}, []
    for name, cmd in steps:
        log = open(logdir/f'{name}.log', 'w')
        running[name] = (subprocess.Popen(['bash', '-c', cmd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL),
                         log, time.time())
        print(f"{name}: started ({cmd}); log in {logdir/f'{name}.log'}", flush=True)
    while running:
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is None: continue
            log.close(); del running[name]
            secs = time.time() - start
            print(f"\n===== {name}: log =====", flush=True)
            sys.stdout.write((logdir/f'{name}.log').read_text(errors='replace')); sys.stdout.flush()
            status = 'passed' if proc.returncode == 0 else f'FAILED (exit status {proc.returncode})'
            print(f"===== {name}: {status} in {secs:.0f} s ({secs/60:.1f} min) =====\n", flush=True)
            if proc.returncode: failed.append(name)
        time.sleep(0.5)
    return failed

def main(argv):
    if len(argv) < 2 or len(argv) % 2: sys.exit(__doc__)
    start = time.time()
    failed = run_steps(list(zip(argv[::2], argv[1::2])))
    print(f"steps: {len(argv)//2 - len(failed)} of {len(argv)//2} passed in {time.time() - start:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ''), flush=True)
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
