"""The web app of `visioncourse serve` (nbs/08_serve.ipynb): each endpoint and each bad or hostile input, through
FastAPI's test client (the app called in-process) and, for what only a real HTTP server does (bodies without a
`Content-Length`, slow senders, a long line of waiting requests), through uvicorn on a free loopback port; on the
session's small models (tests/conftest.py). No assertion here depends on timing: speed is measured in bench/serve_load.py."""
import asyncio, concurrent.futures, contextlib, io, json, pickle, socket, struct, threading, time, zlib
from pathlib import Path
import pytest
from PIL import Image

def app_client(*args, **kwargs):
    "FastAPI's test client of `make_app(*args, **kwargs)`: the app called in this process."
    from fastapi.testclient import TestClient
    from visioncourse.serve import make_app
    return TestClient(make_app(*args, **kwargs))

@pytest.fixture(scope='session')
def served_model(pets_model): return Path(pets_model)

def load_served(model):
    "`model` as `visioncourse serve` loads it: (learner, problem) (serve imported when a test needs it)."
    from visioncourse.serve import load_served
    return load_served(model)

@pytest.fixture(scope='module')
def loaded(served_model): return load_served(served_model)

@pytest.fixture(scope='module')
def text_loaded(imdb_model): return load_served(imdb_model)

@pytest.fixture(scope='module')
def client(loaded): return app_client(*loaded, 'model.pkl')

@pytest.fixture(scope='module')
def text_client(text_loaded): return app_client(*text_loaded, 'model.pkl')

def trained_on_cut(tmp_path_factory, data_cut, problem, n, lr):
    """`visioncourse train problem` at the session's small settings (helpers.SMALL) on `n` items of its dataset (conftest's
    `data_cut`), at the fixed rate `lr` (no finder): its model.pkl. Only the form of the model's answers is checked."""
    from helpers import train_small
    from visioncourse.problems import get_problem
    return train_small(tmp_path_factory, problem, '--lr', lr, '--data', data_cut(get_problem(problem).dataset, n)).out/'model.pkl'

@pytest.fixture(scope='session')
def planet_model(tmp_path_factory, data_cut): return trained_on_cut(tmp_path_factory, data_cut, 'planet', 48, '1e-2')

@pytest.fixture(scope='session')
def camvid_model(tmp_path_factory, data_cut): return trained_on_cut(tmp_path_factory, data_cut, 'camvid', 24, '1e-3')

def upload(client, name, data, mime='image/jpeg'):
    return client.post('/predict', files=dict(file=(name, data, mime)))

def png_of_zeros(w, h):
    "A PNG of `w` x `h` black RGB pixels, compressed row by row: a few hundred KB for a very large image."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    z, row = zlib.compressobj(9), b'\x00' * (3 * w + 1)
    idat = b''.join(z.compress(row) for _ in range(h)) + z.flush()
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', idat) + chunk(b'IEND', b''))

@contextlib.contextmanager
def live(app):
    "Serve `app` with uvicorn on a free port of 127.0.0.1, in a thread of this process: its URL, until the block ends."
    import uvicorn
    sock = socket.socket(); sock.bind(('127.0.0.1', 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level='warning'))
    thread = threading.Thread(target=server.run, kwargs=dict(sockets=[sock]), daemon=True); thread.start()
    try:
        deadline = time.time() + 120
        while not server.started:
            assert thread.is_alive() and time.time() < deadline, 'uvicorn did not start'
            time.sleep(0.05)
        yield f'http://127.0.0.1:{sock.getsockname()[1]}/'
    finally:
        server.should_exit = True; thread.join(60); sock.close()

def raw_post(url, headers, chunks, pause=0.0):
    "POST `chunks` to `url`predict over a plain socket, `pause` s apart, stopping when the server answers: (status, headers, JSON)."
    import select
    host, port = url.split('//')[1].strip('/').split(':')
    with socket.create_connection((host, int(port)), timeout=120) as s:
        s.sendall(('POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' + ''.join(f'{k}: {v}\r\n' for k, v in headers.items()) + '\r\n').encode())
        for chunk in chunks:
            if select.select([s], [], [], pause)[0]: break   # the server has answered: stop sending
            try: s.sendall(chunk)
            except OSError: break                            # it closed the connection after answering
        got = b''
        try:
            while (part := s.recv(65536)): got += part
        except ConnectionResetError: pass   # closed with our unread bytes in its buffer: what came before the reset stands
    head, body = got.split(b'\r\n\r\n', 1)
    lines = head.decode('latin-1').split('\r\n')
    heads = {k.lower(): v.strip() for k, v in (l.split(':', 1) for l in lines[1:])}
    if heads.get('transfer-encoding') == 'chunked':   # uvicorn answers a body of unknown size in chunks
        out = b''
        while (n := int(body.split(b'\r\n', 1)[0], 16)): body = body.split(b'\r\n', 1)[1]; out += body[:n]; body = body[n + 2:]
        body = out
    return int(lines[0].split()[1]), heads, json.loads(body)

def multipart_head(name='file', filename='a.jpg'):
    return (f'--b\r\nContent-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"\r\nContent-Type: image/jpeg' if filename else '')
            + '\r\n\r\n').encode()

def encoded(fmt, size=(16, 12), mode='RGB'):
    buf = io.BytesIO(); Image.new(mode, size, 'red').save(buf, fmt); return buf.getvalue()

# --- the endpoints ---

def test_page(client):
    r = client.get('/')
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/html')
    assert '<input type="file" id="file"' in r.text and "fetch('predict'" in r.text and '<textarea id="text"' in r.text

def test_health(client):
    r = client.get('/health')
    assert r.status_code == 200
    assert r.json() == dict(status='ok', problem='pets', inputs='image', model='model.pkl')

def test_predict(client, loaded, photos):
    fn = photos[0]
    r = upload(client, fn.name, fn.read_bytes())
    assert r.status_code == 200
    a = r.json()
    assert set(a) == {'problem', 'prediction', 'image', 'model_ms'}
    assert a['problem'] == 'pets' and a['model_ms'] > 0
    with Image.open(fn) as im: assert (a['image']['width'], a['image']['height']) == im.size
    p = a['prediction']
    assert sorted(p['probs']) == sorted(map(str, loaded[0].dls.vocab))
    assert p['probs'][p['label']] == max(p['probs'].values())
    assert p['label'] == str(loaded[0].predict(fn)[0])  # fastai's own predict on the file, for an independent check

@pytest.mark.parametrize('mode', ['RGBA', 'L'])
def test_png_upload(client, loaded, photos, mode):
    "A PNG with four channels or one is accepted, and predicted as the same photo in RGB."
    buf = io.BytesIO()
    with Image.open(photos[1]) as im: im.convert(mode).save(buf, 'PNG')
    r = upload(client, 'x.png', buf.getvalue(), 'image/png')
    assert r.status_code == 200, r.json()
    with Image.open(io.BytesIO(buf.getvalue())) as im: expected = str(loaded[0].predict(im.convert('RGB'))[0])
    assert r.json()['prediction']['label'] == expected

# --- bad uploads: 4xx JSON naming the upload ---

@pytest.mark.parametrize('name,data,says', [
    ('notes.txt', b'not a picture at all', 'notes.txt: not an image'),
    ('empty.jpg', b'', 'empty.jpg: the file is empty'),
    ('model.pkl', pickle.dumps({'a': 1}), 'model.pkl: not an image'),
])
def test_not_an_image(client, name, data, says):
    r = upload(client, name, data, 'application/octet-stream')
    assert r.status_code == 400
    assert r.json()['error'].startswith(says)

def test_truncated(client, photos):
    data = photos[0].read_bytes()
    r = upload(client, 'half.jpg', data[:len(data)//2])
    assert r.status_code == 400
    assert r.json()['error'].startswith('half.jpg:') and 'truncated' in r.json()['error']

@pytest.mark.parametrize('fmt', ['BMP', 'GIF', 'EPS', 'TIFF'])
def test_disallowed_format(client, fmt, monkeypatch):
    "Images Pillow reads but the course's datasets never use are refused from their header: EPS never reaches Ghostscript."
    from PIL import EpsImagePlugin, ImageFile
    calls = []
    monkeypatch.setattr(ImageFile.ImageFile, 'load', lambda self, *a: calls.append(self.format))
    monkeypatch.setattr(EpsImagePlugin, 'Ghostscript', lambda *a, **k: calls.append('gs'))
    r = upload(client, f'picture.{fmt.lower()}', encoded(fmt), 'application/octet-stream')
    assert r.status_code == 400 and r.json()['error'].startswith(f'picture.{fmt.lower()}:')
    assert 'JPEG' in r.json()['error'] and 'PNG' in r.json()['error']   # it says what is accepted
    assert calls == []   # nothing was decoded

def test_pixel_bomb(client, monkeypatch):
    "A 410 KB PNG of 12,000 x 12,000 zeros is refused from its header, never decoded, with the limit in the error."
    from PIL import ImageFile
    from visioncourse.problems import MAX_PIXELS
    bomb = png_of_zeros(12_000, 12_000)
    assert len(bomb) < 600_000 and 12_000 * 12_000 > MAX_PIXELS
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, 'load', lambda self, *a: decoded.append(self.size))
    r = upload(client, 'bomb.png', bomb, 'image/png')
    assert r.status_code == 400 and r.json()['error'].startswith('bomb.png:')
    assert f'{MAX_PIXELS:,}' in r.json()['error'] and '12000x12000' in r.json()['error']
    assert decoded == []

def test_pixel_limit_is_a_setting(loaded, photos):
    "The same photo is refused under a limit one pixel below its size, and predicted at its size."
    from visioncourse.serve import Limits
    data = photos[0].read_bytes()
    with Image.open(photos[0]) as im: w, h = im.size
    r = upload(app_client(*loaded, limits=Limits(max_pixels=w*h - 1)), 'a.jpg', data)
    assert r.status_code == 400 and f'{w*h - 1:,}' in r.json()['error']
    assert upload(app_client(*loaded, limits=Limits(max_pixels=w*h)), 'a.jpg', data).status_code == 200

def test_decoded_once_and_handed_over(client, loaded, photos, monkeypatch):
    "The upload is decoded once, and the model is given that decoded image (not a path to decode again)."
    from PIL import ImageFile
    loads, items = [], []
    real_load, real_predict = ImageFile.ImageFile.load, type(loaded[1]).predict
    def counted(self, *a):   # a call that decodes: the file's tiles are still to be read
        if self.tile: loads.append(self.size)
        return real_load(self, *a)
    monkeypatch.setattr(ImageFile.ImageFile, 'load', counted)
    monkeypatch.setattr(type(loaded[1]), 'predict', lambda self, learn, item, **kw: (items.append(item), real_predict(self, learn, item, **kw))[1])
    assert upload(client, 'a.jpg', photos[2].read_bytes()).status_code == 200
    with Image.open(photos[2]) as im: size = im.size
    assert len(items) == 1 and isinstance(items[0], Image.Image) and items[0].size == size
    assert loads.count(size) == 1

def test_too_large(client, monkeypatch):
    "Just over the limit: read, then refused by the handler naming the file; far over: refused from `Content-Length`, unread."
    from visioncourse import serve as serve_mod
    assert serve_mod.MAX_UPLOAD == 10 * 2**20
    r = upload(client, 'huge.jpg', b'\xff' * (serve_mod.MAX_UPLOAD + 1))
    assert r.status_code == 413 and r.json()['error'] == 'huge.jpg: upload too large: the file is over the limit of 10 MB'
    forms = []
    monkeypatch.setattr(serve_mod, '_form', lambda *a: forms.append(a))   # the body must not reach the form parser
    r = upload(client, 'huger.jpg', b'\xff' * (serve_mod.MAX_UPLOAD + 2**20))
    assert r.status_code == 413 and forms == []
    assert r.json()['error'].startswith('upload too large: the request says it is ') and r.json()['error'].endswith('the limit is 10 MB')

def test_size_limit_is_a_setting(loaded, photos):
    from visioncourse.serve import Limits
    data = photos[0].read_bytes()
    assert upload(app_client(*loaded, limits=Limits(max_bytes=len(data) - 1)), 'a.jpg', data).status_code == 413
    assert upload(app_client(*loaded, limits=Limits(max_bytes=len(data))), 'a.jpg', data).status_code == 200

def test_too_large_without_length(loaded):
    "A chunked upload that declares no size is counted as it arrives and refused once over the limit."
    from visioncourse.serve import Limits
    small = app_client(*loaded, limits=Limits(max_bytes=1000))
    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        for _ in range(200): yield b'\xff' * 1024
        yield b'\r\n--b--\r\n'
    r = small.post('/predict', content=body(), headers={'content-type': 'multipart/form-data; boundary=b'})
    assert r.request.headers.get('content-length') is None
    assert r.status_code == 413 and r.json()['error'] == 'upload too large: over 1000 bytes arrived without a Content-Length; the limit is 1000 bytes'

def test_too_large_without_length_over_a_socket(loaded):
    "The same through uvicorn on a real socket, sent in HTTP chunks: a JSON 413 once over the limit, before the body ends."
    from visioncourse.serve import make_app, Limits
    with live(make_app(*loaded, limits=Limits(max_bytes=1000))) as url:
        chunks = [multipart_head()] + [b'\xff' * 1024] * 200 + [b'\r\n--b--\r\n']
        status, heads, answer = raw_post(url, {'Content-Type': 'multipart/form-data; boundary=b', 'Transfer-Encoding': 'chunked'},
                                         [b'%x\r\n%s\r\n' % (len(c), c) for c in chunks] + [b'0\r\n\r\n'], pause=0.01)
    assert 'content-length' not in heads or status == 413
    assert status == 413 and answer == dict(error='upload too large: over 1000 bytes arrived without a Content-Length; the limit is 1000 bytes')

@pytest.mark.parametrize('how', ['multipart', 'urlencoded'])
def test_text_field_too_large_over_a_socket(text_loaded, how):
    "A text field over 1 MB sent to the IMDB model through uvicorn: a 413 naming the field, not the parser's 400."
    import httpx
    from visioncourse.serve import make_app, MAX_FIELD
    with live(make_app(*text_loaded)) as url:
        kw = dict(data=dict(text='a' * (MAX_FIELD + 1)))
        if how == 'multipart': kw['files'] = dict(other=('', b'', 'text/plain'))   # forces a multipart body
        r = httpx.post(url + 'predict', timeout=120, **kw)
    assert r.status_code == 413 and r.json()['error'].startswith("form field 'text': over the limit of 1 MB")

def test_json_too_large(text_client):
    from visioncourse.serve import MAX_FIELD
    r = text_client.post('/predict', content=b'{"text": "' + b'a' * MAX_FIELD + b'"}', headers={'content-type': 'application/json'})
    assert r.status_code == 413 and r.json()['error'].startswith('the JSON body is over the limit of 1 MB')

def test_slow_sender_gets_408(loaded):
    "A client that sends part of its body and then stalls gets a JSON 408 once `receive_s` has passed, over a real socket."
    from visioncourse.serve import make_app, Limits
    with live(make_app(*loaded, limits=Limits(receive_s=1))) as url:
        status, _, answer = raw_post(url, {'Content-Type': 'multipart/form-data; boundary=b', 'Content-Length': '5000'},
                                     [multipart_head(), b'\xff' * 100] + [b'\xff'] * 600, pause=0.5)
    assert status == 408 and answer == dict(error='request timeout: the body did not arrive within 1 s')

@pytest.mark.parametrize('kwargs', [
    dict(files=dict(image=('a.jpg', b'abc', 'image/jpeg'))),   # the wrong field name
    dict(data=dict(file='a.jpg')),                               # a text field, not a file
    dict(),                                                      # no body at all
])
def test_missing_field(client, kwargs):
    r = client.post('/predict', **kwargs)
    assert r.status_code == 422
    assert "'file'" in r.json()['error']

@pytest.mark.parametrize('kwargs', [dict(data=dict(text='A wonderful film.')), dict(json=dict(text='A wonderful film.'))])
def test_text_to_an_image_model(client, kwargs):
    r = client.post('/predict', **kwargs)
    assert r.status_code == 415 and 'pets model predicts images' in r.json()['error'] and "'file'" in r.json()['error']

def test_keeps_serving(client, photos):
    "After every kind of bad request, a good one is still answered."
    data = photos[0].read_bytes()
    for bad in [dict(files=dict(file=('x.txt', b'x', 'text/plain'))), dict(), dict(json=[1, 2]),
                dict(content=b'{not json', headers={'content-type': 'application/json'}),
                dict(files=dict(file=('h.jpg', data[:100], 'image/jpeg')))]:
        r = client.post('/predict', **bad)
        assert r.status_code in (400, 415, 422) and 'error' in r.json()
    assert client.get('/nowhere').status_code == 404
    assert upload(client, 'ok.jpg', data).status_code == 200
    assert client.get('/health').json()['status'] == 'ok'

# --- a model that fails: JSON 500, the traceback in the log ---

def failing_problem(base, exc):
    "A copy of problem `base` whose `predict` raises `exc`."
    class Failing(type(base)):
        def predict(self, learn, item, out=None): raise exc
    return Failing()

@pytest.mark.parametrize('exc', [RuntimeError('CUDA out of memory (pretend)'), ValueError('an internal shape mismatch')])
def test_model_that_raises(loaded, photos, caplog, exc):
    "Any failure inside the model is a JSON 500 with a generic message (never the client's fault, never a traceback)."
    learn, problem = loaded
    c = app_client(learn, failing_problem(problem, exc))
    with caplog.at_level('ERROR', logger='visioncourse.serve'):
        r = upload(c, 'a.jpg', photos[0].read_bytes())
    assert r.status_code == 500 and r.headers['content-type'] == 'application/json'
    assert r.json() == dict(error="internal error: the model failed on this input (the server's log has the details)")
    assert str(exc) not in r.text
    rec = [x for x in caplog.records if x.exc_info]
    assert len(rec) == 1 and rec[0].exc_info[1] is exc and 'a.jpg' in rec[0].getMessage()
    assert c.get('/health').status_code == 200

def test_unexpected_error_anywhere_is_json(loaded, monkeypatch):
    "An error outside the model too (here, reading the form) answers JSON 500."
    from fastapi.testclient import TestClient
    from visioncourse import serve as serve_mod
    async def broken(request, problem): raise KeyError('boom')
    monkeypatch.setattr(serve_mod, 'read_input', broken)
    r = TestClient(serve_mod.make_app(*loaded), raise_server_exceptions=False).post('/predict', files=dict(file=('a.jpg', b'x')))
    assert r.status_code == 500 and r.json()['error'].startswith('internal error')

# --- one lock, a bound on the work, no shared state ---

class Overlap:
    "Count how many calls of `predict` run at the same time (each waits 50 ms inside)."
    def __init__(self): self.now, self.most, self.guard = 0, 0, threading.Lock()
    def problem(self, base):
        watch = self
        class Watched(type(base)):
            def predict(self, learn, item, out=None):
                with watch.guard: watch.now += 1; watch.most = max(watch.most, watch.now)
                time.sleep(0.05)
                try: return super().predict(learn, item)
                finally:
                    with watch.guard: watch.now -= 1
        return Watched()

def test_lock(loaded, photos, served_model):
    "Eight uploads at once, four let through the gate: the lock still lets one prediction at a time touch the learner."
    from visioncourse.serve import Limits, predict_item
    learn, problem = loaded
    watch = Overlap()
    c = app_client(learn, watch.problem(problem), limits=Limits(busy=4))
    alone = {fn.name: upload(c, fn.name, fn.read_bytes()).json()['prediction']['label'] for fn in photos}
    def post(fn): return fn.name, upload(c, fn.name, fn.read_bytes())
    with concurrent.futures.ThreadPoolExecutor(8) as ex: answers = list(ex.map(post, photos))
    assert all(r.status_code == 200 for _, r in answers)
    assert all(r.json()['prediction']['label'] == alone[n] for n, r in answers)
    assert watch.most == 1
    # the same detector with no lock, on a learner of its own: the calls overlap, so the assertion above can fail
    other, _ = load_served(served_model)
    unlocked = Overlap()
    def attempt(im):
        try: return predict_item(other, unlocked.problem(problem), im, contextlib.nullcontext())['prediction']['label']
        except Exception as e: return e
    images = []
    for fn in photos:
        with Image.open(fn) as im: images.append(im.convert('RGB'))
    with concurrent.futures.ThreadPoolExecutor(8) as ex: list(ex.map(attempt, images))
    assert unlocked.most > 1

def slow(problem):
    "A copy of `problem` whose `predict` sets its `started` event, then waits for its `release` event."
    class Slow(type(problem)):
        def predict(self, learn, item, out=None): self.started.set(); self.release.wait(120); return super().predict(learn, item)
    held = Slow()
    held.started, held.release = threading.Event(), threading.Event()
    return held

def test_long_wait_answers_503(loaded, photos):
    "Once a request has been timed, one whose expected wait passes `max_wait` gets a 503 JSON with `Retry-After`; then work resumes."
    from visioncourse.serve import Limits
    held = slow(loaded[1])
    started, release = held.started, held.release
    c = app_client(loaded[0], held, limits=Limits(busy=1, max_wait=0))
    data = photos[0].read_bytes()
    release.set()
    assert upload(c, 'a.jpg', data).status_code == 200   # timed
    started.clear(); release.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(upload, c, 'b.jpg', data)
        assert started.wait(120)
        r = upload(c, 'c.jpg', data)
        release.set()
        assert first.result().status_code == 200
    assert r.status_code == 503 and int(r.headers['retry-after']) >= 1
    assert r.json()['error'].startswith('server busy: the expected wait of ') and 'over the limit of 0 s' in r.json()['error']
    assert upload(c, 'd.jpg', data).status_code == 200

def run_in_own_loop(coro):
    "Run `coro` to its end in a fresh event loop on a thread of its own: the browser tests' Playwright may run one in this thread."
    with concurrent.futures.ThreadPoolExecutor(1) as pool: return pool.submit(asyncio.run, coro).result()

def test_admission_arithmetic():
    "The expected wait is the line ahead times the measured mean over `busy`; past `max_wait` a 503, past `inside` a 503."
    from visioncourse.serve import Admission, ClientError
    async def settle():   # let every callback and task that is ready run
        for _ in range(10): await asyncio.sleep(0)
    async def scenario():
        a = Admission(busy=2, max_wait=0.6, inside=6)
        for _ in range(6): a.arrive()
        with pytest.raises(ClientError) as e: a.arrive()
        assert e.value.status == 503 and 'Retry-After' in e.value.headers
        await a.enter(); await a.enter()                     # two places: no wait, nothing measured yet
        assert a.expected_wait() == 0                        # nothing measured: nobody refused for the wait
        waiting = [asyncio.ensure_future(a.enter()) for _ in range(2)]
        await settle()
        assert len(a.line) == 2 and not any(w.done() for w in waiting)
        a.leave(0.5)                                         # the first in line gets the place; the mean is 0.5 s
        await settle()
        assert waiting[0].done() and not waiting[1].done() and a.working == 2
        assert a.expected_wait() == (1 + 1) * 0.5 / 2        # one ahead in line, and this one
        third = asyncio.ensure_future(a.enter()); await settle()   # expected 0.5 s: allowed
        with pytest.raises(ClientError) as e: await a.enter()   # expected (2 + 1) * 0.5 / 2 = 0.75 s: over max_wait
        assert e.value.status == 503 and e.value.headers == {'Retry-After': '1'}
        third.cancel(); await settle()
        assert len(a.line) == 1 and not waiting[1].done()    # a cancelled wait leaves the line
        a.leave(0.5); a.leave(0.5); a.leave(0.5); await settle()
        assert waiting[1].done() and a.working == 0 and not a.line
    run_in_own_loop(scenario())

def test_waiting_holds_no_thread(loaded, photos):
    "60 uploads through uvicorn while one prediction is held: 59 wait in line, no thread each, /health answers; then all 200."
    import httpx
    from visioncourse.serve import make_app, Limits
    held = slow(loaded[1])
    app = make_app(loaded[0], held, limits=Limits(busy=1))
    data = photos[0].read_bytes()
    with live(app) as url:
        before = threading.active_count()
        async def burst():
            async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=100)) as c:
                posts = [asyncio.ensure_future(c.post('predict', files=dict(file=(f'{i}.jpg', data, 'image/jpeg')))) for i in range(60)]
                while len(app.state.admission.line) < 59: await asyncio.sleep(0.05)
                health = await c.get('health')
                threads = threading.active_count() - before
                held.release.set()
                return health, threads, await asyncio.gather(*posts)
        health, threads, answers = run_in_own_loop(burst())
    assert health.status_code == 200 and health.json()['status'] == 'ok'
    assert threads < 20   # one at work and a few of the server's own; before, each waiting request held a thread
    assert [r.status_code for r in answers] == [200] * 60

def test_waiting_requests_are_answered(loaded, photos):
    "Requests beyond `busy` wait their turn and are all answered."
    from visioncourse.serve import Limits
    watch = Overlap()
    c = app_client(loaded[0], watch.problem(loaded[1]), limits=Limits(busy=1))
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        codes = [r.status_code for r in ex.map(lambda fn: upload(c, fn.name, fn.read_bytes()), photos[:6])]
    assert codes == [200] * 6 and watch.most == 1

def test_files_go_to_a_folder_of_their_own(loaded, photos):
    "A problem that writes a file writes it into the request's own `out` folder, sent back inline, then removed."
    import base64
    from visioncourse.serve import Limits
    learn, problem = loaded
    folders = []
    class Writes(type(problem)):
        def predict(self, learn, item, out=None):
            folders.append(out); fn = out/'upload.png'
            Image.new('L', item.size).save(fn)
            return dict(mask=str(fn))
    writes = Writes()
    c = app_client(learn, writes, limits=Limits(busy=2))
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        answers = list(ex.map(lambda fn: (fn, upload(c, fn.name, fn.read_bytes())), photos[:4]))
    for fn, r in answers:
        url = r.json()['prediction']['mask']
        assert url.startswith('data:image/png;base64,')
        with Image.open(io.BytesIO(base64.b64decode(url.split(',', 1)[1]))) as m, Image.open(fn) as im: assert m.size == im.size
    assert len(set(folders)) == 4 and not any(f.exists() for f in folders)
    assert 'out_dir' not in vars(writes) and 'out_dir' not in vars(problem)

# --- a text model ---

def test_text_health_and_page(text_client):
    "A text model says so in /health, which the page reads to show its text box (the browser test sees it shown)."
    assert text_client.get('/health').json() == dict(status='ok', problem='imdb', inputs='text', model='model.pkl')
    assert '<textarea id="text"' in text_client.get('/').text

@pytest.mark.parametrize('how', ['form', 'json'])
def test_text_predict(text_client, text_loaded, how):
    "A review sent as the form field `text` or as JSON gets fastai's own prediction for that text."
    learn, _ = text_loaded
    review = 'A wonderful, moving film with a great cast.'
    r = text_client.post('/predict', **(dict(data=dict(text=review)) if how == 'form' else dict(json=dict(text=review))))
    assert r.status_code == 200, r.json()
    a = r.json()
    assert set(a) == {'problem', 'prediction', 'model_ms'} and a['problem'] == 'imdb'
    label, idx, probs = learn.predict(review)
    assert a['prediction']['label'] == str(label)
    assert abs(a['prediction']['probability'] - float(probs[idx])) < 1e-5

def test_image_to_a_text_model(text_client, photos):
    r = upload(text_client, photos[0].name, photos[0].read_bytes())
    assert r.status_code == 415
    assert r.json()['error'].startswith(f'{photos[0].name}: this imdb model predicts text') and "'text'" in r.json()['error']

@pytest.mark.parametrize('kwargs,status,says', [
    (dict(data=dict(text='   ')), 400, 'text: the text is empty'),
    (dict(json=dict(text='x' * 100_001)), 413, 'the limit is 100000'),
    (dict(json=dict(review='good')), 422, "no string 'text'"),
    (dict(json=dict(text=5)), 422, "no string 'text'"),
    (dict(), 422, "'text'"),
])
def test_bad_text(text_client, kwargs, status, says):
    r = text_client.post('/predict', **kwargs)
    assert r.status_code == status and says in r.json()['error']

# --- every problem of the registry ---

@pytest.mark.parametrize('which,keys', [('pascal_model', {'labels', 'threshold', 'probs'}), ('biwi_model', {'x', 'y'}),
                                        ('planet_model', {'labels', 'threshold', 'probs'}), ('camvid_model', {'mask', 'shares'})])
def test_other_image_problems(request, which, keys, photos):
    "PASCAL's and Planet's tags, BIWI's head centre and CamVid's mask come back as JSON the page can draw."
    c = app_client(*load_served(request.getfixturevalue(which)))
    r = upload(c, photos[0].name, photos[0].read_bytes())
    assert r.status_code == 200, r.json()
    assert set(r.json()['prediction']) == keys
    if 'mask' in keys:   # CamVid's mask comes back inline as a PNG, written into the request's own folder, not kept
        assert r.json()['prediction']['mask'].startswith('data:image/png;base64,')

def test_every_registered_problem_is_served_or_refused(monkeypatch, tmp_path, loaded):
    "Each problem of the registry takes images or text; an export for an input `serve` cannot take is refused in one line."
    from visioncourse.problems import PROBLEMS, get_problem, UsageError
    assert {get_problem(n).inputs for n in PROBLEMS} <= {'image', 'text'}
    learn = loaded[0]
    monkeypatch.setitem(PROBLEMS, 'pets', {**PROBLEMS['pets'], 'inputs': 'audio'})
    learn.export(tmp_path/'model.pkl')
    with pytest.raises(UsageError, match=r"model.pkl: a pets model predicts from 'audio'; serve takes images or text"):
        load_served(tmp_path/'model.pkl')

# --- starting the server ---

class Unpickled:
    "An object whose unpickling writes a line straight to file descriptor 2, as a malicious model file could run anything."
    def __reduce__(self):
        import os
        return os.write, (2, b'UNPICKLED: code from the model file ran\n')

def test_trust_notice_before_unpickling(tmp_path, capfd):
    from visioncourse.problems import UsageError
    from visioncourse.serve import serve
    fn = tmp_path/'model.pkl'; fn.write_bytes(pickle.dumps(Unpickled()))
    with pytest.raises(UsageError, match='model.pkl: not a visioncourse model export'): serve(fn)
    err = capfd.readouterr().err
    assert 'loading it runs its code' in err and 'UNPICKLED' in err
    assert err.index('loading it runs its code') < err.index('UNPICKLED')

def test_serve_defaults_and_warning(served_model, monkeypatch, capsys):
    "`serve` warns once that the model is a pickle, loads it once, and binds to loopback port 8000 by default."
    import uvicorn
    from visioncourse import serve as serve_mod
    calls = []
    monkeypatch.setattr(uvicorn, 'run', lambda app, **kw: calls.append((app, kw)))
    serve_mod.serve(served_model)
    assert len(calls) == 1 and calls[0][1]['host'] == '127.0.0.1' and calls[0][1]['port'] == 8000
    assert capsys.readouterr().err.count('loading it runs its code') == 1

def test_serve_refuses_non_export(tmp_path):
    from visioncourse.problems import UsageError
    from visioncourse.serve import serve
    bad = tmp_path/'model.pkl'; bad.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UsageError, match='model.pkl: not a visioncourse model export'): serve(bad)

def test_cli_refuses_non_export(tmp_path, capsys):
    "`visioncourse serve` on a file that is not a course export: the notice, then one error line, exit status 2, no server."
    import visioncourse.cli as cli
    bad = tmp_path/'model.pkl'; bad.write_text('not a pickle')
    code = cli.main(['serve', str(bad), '--port', '1'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith('visioncourse: error') and 'model.pkl: not a visioncourse model export' in err[-1]
    assert len(err) == 2 and 'loading it runs its code' in err[0]
