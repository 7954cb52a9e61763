"""Load test of `visioncourse serve` on the loopback interface: ordinary predictions, then hostile uploads.

Starts `visioncourse serve MODEL` on a free port of 127.0.0.1 (a tiny pets model trained for the run unless --model
is given), waits for /health, then:

1. posts one pet photo to /predict `--requests` times with `--concurrency` requests in flight, and prints requests
   per second, p50/p95 latency and the errors (any answer but 200);
2. slow clients (`--slow`, default 50, 0: none): each opens a connection and sends its upload at about `--slow-rate`
   bytes a second (1 KB/s), half of them a 49 KB photo (sent in under a minute: they should end 200), half the
   sample's largest photo (244 KB: they should end 408 at the server's 60 s receive deadline); while they send,
   `--beside` (20) ordinary uploads are posted at once, after the same burst was timed on the unloaded server, and
   /health is asked every half second; it prints how each slow client ended, the two bursts' latencies, and /health's;
3. sends `--hostile` uploads, `--hostile-concurrency` at once, in a fixed shuffled mix: *bombs* (a 12,000 x 12,000
   PNG of zeros, 410 KB on the wire, 432 MB once decoded), *large* images (a 6,000 x 4,000 PNG of zeros, 24
   megapixels), 10 MB of random bytes named `.jpg`, and ordinary photos; it prints the status codes each kind got.

All the while it samples the server's resident memory (`VmRSS` in /proc, every 20 ms) and prints the idle server's
(after one warm-up prediction) beside the peak (`VmHWM`, the kernel's own high-water mark). If the server grows past
`--rss-cap` MB it is killed (so a server without bounds cannot take the machine down) and the run says so.
Nothing leaves the machine; nothing is written outside a temporary folder, removed at the end.

    python bench/serve_load.py [--requests 100] [--concurrency 100] [--slow 50] [--hostile 24] [--model runs/pets/model.pkl]

To measure another version of the server with the same load, point PYTHONPATH at its `lib/` folder: the server is
started with this environment, and the log line `visioncourse from ...` says which copy it imported.
"""
import argparse, collections, concurrent.futures, datetime, io, json, os, platform, random, shutil, socket, subprocess
import sys, tempfile, threading, time, urllib.request
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

def status_kb(pid, field):
    "A `kB` field of /proc/PID/status (VmRSS, VmHWM), in MB; None once the process is gone."
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith(field + ':'): return int(line.split()[1]) / 1024
    except OSError: return None

class RssWatch(threading.Thread):
    "Sample the resident memory of process `pid` every 20 ms; kill it once over `cap_mb`."
    def __init__(self, pid, cap_mb):
        super().__init__(daemon=True)
        self.pid, self.cap_mb, self.peak, self.killed, self.running = pid, cap_mb, 0.0, False, True
    def run(self):
        while self.running:
            rss = status_kb(self.pid, 'VmRSS')
            if rss is None: return
            self.peak = max(self.peak, rss)
            if rss > self.cap_mb and not self.killed:
                self.killed = True
                os.kill(self.pid, 9)
            time.sleep(0.02)

def png_of_zeros(w, h):
    "A PNG of `w` x `h` black RGB pixels, written row by row (never holding the whole image)."
    import zlib, struct
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    z, row, parts = zlib.compressobj(9), b'\x00' + b'\x00' * (3 * w), []
    for _ in range(h): parts.append(z.compress(row))
    parts.append(z.flush())
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', b''.join(parts)) + chunk(b'IEND', b''))

def hostile_uploads(photo, n, seed=0):
    "`n` (kind, filename, bytes, mime) uploads in a fixed shuffled mix: a third bombs, the rest large, junk and photos."
    bomb, large = png_of_zeros(12_000, 12_000), png_of_zeros(6_000, 4_000)
    junk = random.Random(seed).randbytes(10 * 2**20 - 4096)   # 10 MB, just under the upload limit
    kinds = dict(bomb=('bomb.png', bomb, 'image/png'), large=('large.png', large, 'image/png'),
                 junk=('junk.jpg', junk, 'image/jpeg'), photo=(photo.name, photo.read_bytes(), 'image/jpeg'))
    mix = ['bomb'] * (n // 3) + ['large'] * (n // 6) + ['junk'] * (n // 6)
    mix += ['photo'] * (n - len(mix))
    random.Random(seed).shuffle(mix)
    return [(k, *kinds[k]) for k in mix]

def post_all(url, uploads, concurrency, timeout=300):
    "Post each upload to /predict, `concurrency` at once: (seconds, [(kind, status or error name, seconds)])."
    import httpx
    with httpx.Client(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=concurrency)) as client:
        def one(u):
            kind, name, data, mime = u
            start = time.perf_counter()
            try:
                r = client.post('predict', files=dict(file=(name, data, mime)))
                got = r.status_code if r.headers.get('content-type', '').startswith('application/json') else f'{r.status_code} not JSON'
            except httpx.HTTPError as e: got = type(e).__name__
            return kind, got, time.perf_counter() - start
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as ex: results = list(ex.map(one, uploads))
    return time.perf_counter() - start, results

def slow_post(url, name, data, rate, timeout=300):
    "Send `data` as the form's file to /predict at about `rate` bytes a second, stopping once the server answers: (status or error, s)."
    import select
    host, port = url.split('//')[1].strip('/').split(':')
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\nContent-Type: image/jpeg\r\n\r\n' % name.encode()
            + data + b'\r\n--b--\r\n')
    start = time.perf_counter()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=b\r\n'
                      b'Content-Length: %d\r\n\r\n' % len(body))
            step = max(1, rate // 4)
            for i in range(0, len(body), step):   # a quarter of `rate` every quarter of a second
                if select.select([s], [], [], 0.25)[0]: break   # the server has answered
                try: s.sendall(body[i:i + step])
                except OSError: break
            got = b''
            try:
                while (part := s.recv(65536)): got += part
            except ConnectionResetError: pass
        head = got.split(b'\r\n', 1)[0].split()
        if len(head) < 2: return 'reset, no answer', time.perf_counter() - start
        json_body = b'application/json' in got.split(b'\r\n\r\n', 1)[0].lower()
        return int(head[1]) if json_body else f'{int(head[1])} not JSON', time.perf_counter() - start
    except OSError as e: return type(e).__name__, time.perf_counter() - start

class HealthWatch(threading.Thread):
    "Ask /health every `every` seconds until stopped: each answer's status (or error) and seconds."
    def __init__(self, url, every=0.5):
        super().__init__(daemon=True); self.url, self.every, self.answers, self.running = url, every, [], True
    def run(self):
        while self.running:
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url + 'health', timeout=30) as r: got = r.status
            except Exception as e: got = type(e).__name__
            self.answers.append((got, time.perf_counter() - start))
            time.sleep(self.every)

def latencies(results):
    "p50, p95 and the largest of the 200s' seconds, in ms, and how many answers were not 200."
    lat = [t for _, got, t in results if got == 200]
    ms = lambda x: round(x * 1000, 1)
    return dict(p50_ms=ms(percentile(lat, 50)) if lat else None, p95_ms=ms(percentile(lat, 95)) if lat else None,
                max_ms=ms(max(lat)) if lat else None, errors=sum(got != 200 for _, got, _ in results))

def slow_phase(url, photo, big, args):
    "The slow clients with, at the same time, `args.beside` ordinary uploads and a /health watch."
    ordinary = [('photo', photo.name, photo.read_bytes(), 'image/jpeg')] * args.beside
    _, alone = post_all(url, ordinary, args.beside)   # the same burst on the unloaded server
    health = HealthWatch(url); health.start()
    pick = [(photo.name, photo.read_bytes()) if i % 2 == 0 else (big.name, big.read_bytes()) for i in range(args.slow)]
    with concurrent.futures.ThreadPoolExecutor(args.slow) as ex:
        slow = [ex.submit(slow_post, url, n, d, args.slow_rate) for n, d in pick]
        time.sleep(3)                                   # all of them connected and sending
        _, beside = post_all(url, ordinary, args.beside)
        ends = [f.result() for f in slow]
    health.running = False; health.join()
    by_size = collections.defaultdict(collections.Counter)
    for (n, d), (got, t) in zip(pick, ends): by_size[f'{len(d)//1000} KB'][str(got)] += 1
    hs = [t for got, t in health.answers if got == 200]
    return dict(slow=args.slow, slow_rate=args.slow_rate, slow_answers={k: dict(v) for k, v in by_size.items()},
                slow_seconds=dict(min=round(min(t for _, t in ends), 1), max=round(max(t for _, t in ends), 1)),
                beside=args.beside, beside_unloaded=latencies(alone), beside_with_slow=latencies(beside),
                health_asked=len(health.answers), health_not_200=len(health.answers) - len(hs),
                health_max_ms=round(max(hs) * 1000, 1) if hs else None)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--requests', type=int, default=100, help='ordinary predictions to send (0: none)')
    p.add_argument('--concurrency', type=int, default=100, help='ordinary requests in flight at once')
    p.add_argument('--slow', type=int, default=50, help='slow clients, sending their uploads at --slow-rate (0: none)')
    p.add_argument('--slow-rate', type=int, default=1024, help='bytes a second each slow client sends')
    p.add_argument('--beside', type=int, default=20, help='ordinary uploads posted at once while the slow clients send')
    p.add_argument('--hostile', type=int, default=24, help='hostile uploads to send after them (0: none)')
    p.add_argument('--hostile-concurrency', type=int, default=8, help='hostile requests in flight at once')
    p.add_argument('--rss-cap', type=int, default=6000, help='MB of resident memory at which the server is killed')
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
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        health = wait_healthy(url, proc)
        import visioncourse
        from visioncourse.data import dataset_path
        which = subprocess.run([sys.executable, '-c', 'import visioncourse; print(visioncourse.__file__)'],
                               capture_output=True, text=True).stdout.strip()
        print(f"visioncourse from {Path(which).parent.parent}")
        image = sorted((dataset_path('pets')/'images').glob('*.jpg'))[0]
        post_all(url, [('photo', image.name, image.read_bytes(), 'image/jpeg')], 1)  # warm-up, not counted
        time.sleep(1)
        idle = status_kb(proc.pid, 'VmRSS')
        watch = RssWatch(proc.pid, args.rss_cap); watch.start()
        res = dict(idle_rss_mb=round(idle))
        if args.requests:
            elapsed, results = post_all(url, [('photo', image.name, image.read_bytes(), 'image/jpeg')] * args.requests, args.concurrency)
            lat = [t for _, got, t in results if got == 200]
            errors = sum(got != 200 for _, got, _ in results)
            res.update(requests=args.requests, concurrency=args.concurrency, errors=errors,
                       requests_per_s=round(args.requests / elapsed, 2), seconds=round(elapsed, 2),
                       p50_ms=round(percentile(lat, 50) * 1000, 1) if lat else None,
                       p95_ms=round(percentile(lat, 95) * 1000, 1) if lat else None)
            print(f"{args.requests} predictions, {args.concurrency} at a time, on {url}: {res['requests_per_s']} requests/s, "
                  f"p50 {res['p50_ms']} ms, p95 {res['p95_ms']} ms, {errors} errors; peak RSS so far {watch.peak:.0f} MB")
        if args.slow:
            res.update(slow_phase(url, image, max((dataset_path('pets')/'images').glob('*.jpg'), key=lambda f: f.stat().st_size), args))
            print(f"{args.slow} slow clients at {args.slow_rate} B/s ended: {res['slow_answers']} after {res['slow_seconds']} s; "
                  f"{args.beside} ordinary uploads at once beside them: {res['beside_with_slow']} (unloaded: {res['beside_unloaded']}); "
                  f"/health asked {res['health_asked']} times, {res['health_not_200']} not 200, slowest {res['health_max_ms']} ms")
        if args.hostile:
            uploads = hostile_uploads(image, args.hostile)
            elapsed, results = post_all(url, uploads, args.hostile_concurrency)
            by_kind = collections.defaultdict(collections.Counter)
            for kind, got, _ in results: by_kind[kind][str(got)] += 1
            res.update(hostile=args.hostile, hostile_concurrency=args.hostile_concurrency, hostile_seconds=round(elapsed, 1),
                       hostile_answers={k: dict(v) for k, v in sorted(by_kind.items())})
            print(f"{args.hostile} hostile uploads, {args.hostile_concurrency} at a time, in {elapsed:.1f} s: "
                  + '; '.join(f"{k}: {dict(v)}" for k, v in sorted(by_kind.items())))
        time.sleep(0.5)
        watch.running = False
        hwm = status_kb(proc.pid, 'VmHWM')
        peak = max(watch.peak, hwm or 0)
        alive = proc.poll() is None
        res.update(peak_rss_mb=round(peak), peak_over_idle_mb=round(peak - idle), server_alive=alive,
                   killed_at_cap=watch.killed, rss_cap_mb=args.rss_cap)
        if alive:
            with urllib.request.urlopen(url + 'health', timeout=10) as r: res['health_after'] = json.load(r)['status']
        print(f"server resident memory: idle {idle:.0f} MB, peak {peak:.0f} MB (+{peak - idle:.0f} MB)"
              + (f"; KILLED at the {args.rss_cap} MB cap" if watch.killed else '')
              + ('' if alive else '; the server is gone'))
        import torch, fastai, fastapi, uvicorn
        res.update(problem=health['problem'], model=str(model) if args.model else 'tiny pets resnet18 32 px',
                   image=image.name, cpus=os.cpu_count(), load_average=os.getloadavg()[0],
                   versions=dict(torch=torch.__version__, fastai=fastai.__version__, fastapi=fastapi.__version__,
                                 uvicorn=uvicorn.__version__, python=platform.python_version()),
                   date=datetime.date.today().isoformat())
        print(json.dumps(res))
        failed = res.get('errors') or res.get('health_not_200') or (res.get('beside_with_slow') or {}).get('errors')
        return 1 if failed or not alive else 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try: proc.wait(timeout=20)
            except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        if proc is not None and os.environ.get('SERVE_LOAD_LOG'):
            shutil.copy(work/'server.log', os.environ['SERVE_LOAD_LOG'])
        shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__':
    sys.exit(main())
