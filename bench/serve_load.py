"""Load test of `visioncourse serve`: a fixed number of predictions, a few at a time, on the loopback interface.

Starts `visioncourse serve MODEL` on a free port of 127.0.0.1 (a tiny pets model trained for the run unless --model
is given), waits for /health, posts one pet photo to /predict `--requests` times with `--concurrency` requests in
flight, then stops the server and prints requests per second, p50/p95 latency and the error count. Nothing leaves
the machine, and nothing is written outside a temporary folder, removed at the end.

    python bench/serve_load.py [--requests 200] [--concurrency 8] [--model runs/pets/model.pkl]
"""
import argparse, concurrent.futures, datetime, json, os, platform, shutil, socket, subprocess, sys, tempfile, time
import urllib.request
from pathlib import Path

def tiny_pets_model(folder, per_breed=5, size=32):
    "Train resnet18 from random weights for one epoch at `size` px on `per_breed` photos of each breed; its model.pkl."
    import warnings
    warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
    import visioncourse
    from visioncourse.data import dataset_path
    from visioncourse.problems import get_problem
    pets, src = get_problem('pets'), dataset_path('pets')/'images'
    (folder/'pets'/'images').mkdir(parents=True)
    seen = {}
    for fn in sorted(src.glob('*.jpg')):
        breed = fn.name.rsplit('_', 1)[0]
        if seen.get(breed, 0) < per_breed:
            seen[breed] = seen.get(breed, 0) + 1
            (folder/'pets'/'images'/fn.name).symlink_to(fn)
    learn = pets.learner(pets.dls(folder/'pets', size=size, bs=16, num_workers=0), 'resnet18', pretrained=False)
    learn.path = folder
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 2e-3)
    learn.visioncourse = dict(problem='pets', version=visioncourse.__version__)
    learn.export(folder/'model.pkl')
    return folder/'model.pkl'

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_healthy(url, proc, timeout=180):
    "The server's /health answer, once it gives one; an error if the process stops or `timeout` passes."
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None: raise RuntimeError(f"the server stopped with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + 'health', timeout=2) as r: return json.load(r)
        except OSError:
            if time.time() > deadline: raise RuntimeError(f"no answer from {url}health within {timeout} s")
            time.sleep(0.5)

def percentile(xs, q):
    "The `q`-th percentile of `xs` by linear interpolation between closest ranks (numpy's default)."
    xs = sorted(xs); k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

def load(url, image, n, concurrency, timeout=120):
    "Post `image` to /predict `n` times, `concurrency` at once: (seconds, latencies of the successes in s, errors)."
    import httpx
    data = image.read_bytes()
    with httpx.Client(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=concurrency)) as client:
        def one(_):
            start = time.perf_counter()
            try:
                r = client.post('predict', files=dict(file=(image.name, data, 'image/jpeg')))
                ok = r.status_code == 200 and 'prediction' in r.json()
            except (httpx.HTTPError, ValueError): ok = False
            return ok, time.perf_counter() - start
        client.post('predict', files=dict(file=(image.name, data, 'image/jpeg')))  # warm-up, not counted
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as ex: results = list(ex.map(one, range(n)))
        elapsed = time.perf_counter() - start
    return elapsed, [t for ok, t in results if ok], sum(not ok for ok, _ in results)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--requests', type=int, default=200, help='predictions to send (fixed: the run stops after them)')
    p.add_argument('--concurrency', type=int, default=8, help='requests in flight at once')
    p.add_argument('--model', help='a model.pkl from `visioncourse train` (default: a tiny pets model trained now)')
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix='serve_load_'))
    proc = None
    try:
        t0 = time.time()
        model = Path(args.model) if args.model else tiny_pets_model(work)
        if not args.model: print(f"trained a tiny pets model (resnet18, 32 px, 1 epoch) in {time.time()-t0:.0f} s")
        port = free_port()
        url = f'http://127.0.0.1:{port}/'
        exe = Path(sys.executable).parent/'visioncourse'
        cmd = ([str(exe), 'serve', str(model), '--port', str(port)] if exe.exists() else
               [sys.executable, '-c', f'from visioncourse.serve import serve; serve({str(model)!r}, port={port})'])
        log = open(work/'server.log', 'w')
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        health = wait_healthy(url, proc)
        from visioncourse.data import dataset_path
        image = sorted((dataset_path('pets')/'images').glob('*.jpg'))[0]
        elapsed, lat, errors = load(url, image, args.requests, args.concurrency)
        import torch, fastai, fastapi, uvicorn
        res = dict(requests=args.requests, concurrency=args.concurrency, errors=errors,
                   requests_per_s=round(args.requests / elapsed, 2), seconds=round(elapsed, 2),
                   p50_ms=round(percentile(lat, 50) * 1000, 1) if lat else None,
                   p95_ms=round(percentile(lat, 95) * 1000, 1) if lat else None,
                   problem=health['problem'], model=str(model) if args.model else 'tiny pets resnet18 32 px',
                   image=image.name, cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                   versions=dict(torch=torch.__version__, fastai=fastai.__version__, fastapi=fastapi.__version__,
                                 uvicorn=uvicorn.__version__, python=platform.python_version()),
                   date=datetime.date.today().isoformat())
        print(f"{args.requests} predictions, {args.concurrency} at a time, on {url}: "
              f"{res['requests_per_s']} requests/s, p50 {res['p50_ms']} ms, p95 {res['p95_ms']} ms, {errors} errors")
        print(json.dumps(res))
        return 1 if errors else 0
    finally:
        if proc is not None:
            proc.terminate()
            try: proc.wait(timeout=20)
            except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__':
    sys.exit(main())
