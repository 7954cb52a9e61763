"""`visioncourse serve` in a real browser: start the server on a free loopback port with a small trained model, open
its page in headless Chromium, upload a photo through the page's file input (or, for the IMDB model, type a review
into its text box) and check the prediction shown. Screenshots go to tests/screenshots/ (git-ignored)."""
import contextlib, json, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from helpers import free_port

SHOTS = Path(__file__).parent/'screenshots'
sync_api = pytest.importorskip('playwright.sync_api')
# `browser` (tests/conftest.py): headless Chromium, skipped with one line without it, required under CI=true

def serve_command(model, port):
    "`visioncourse serve MODEL --port PORT`, the command a user runs."
    return [str(Path(sys.executable).parent/'visioncourse'), 'serve', str(model), '--port', str(port)]

@contextlib.contextmanager
def running(model):
    "`visioncourse serve MODEL` on a free loopback port: (its URL, its /health answer), stopped at the end."
    port = free_port()
    proc = subprocess.Popen(serve_command(model, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None: pytest.fail(f'the server stopped: {proc.stdout.read()}')
            try:
                with urllib.request.urlopen(url + 'health', timeout=2) as r: health = json.load(r)
                break
            except OSError:
                if time.time() > deadline: pytest.fail('the server did not answer /health within 120 s')
                time.sleep(0.5)
        yield url, health
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()

@pytest.fixture(scope='module')
def server(pets_model):
    with running(pets_model) as s: yield s

@pytest.fixture(scope='module')
def text_server(imdb_model):
    with running(imdb_model) as s: yield s

def api_predict(url, fn):
    "The server's JSON answer for photo `fn`, asked directly (not through the page)."
    import httpx
    r = httpx.post(url + 'predict', files=dict(file=(fn.name, fn.read_bytes(), 'image/jpeg')), timeout=60)
    r.raise_for_status(); return r.json()

def open_page(browser, url, shown, height=900):
    "The app's page at `url` in a new tab, once it names the model (`shown`): the page, and the list its script errors go to."
    page = browser.new_page(viewport=dict(width=900, height=height))
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.goto(url)
    sync_api.expect(page.locator('#problem')).to_have_text(shown)
    return page, errors

def screenshot(page, name):
    "Keep the whole page as tests/screenshots/NAME.png, for a person to look at."
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS/f'{name}.png'), full_page=True)

def test_upload_through_page(server, browser, photos):
    url, health = server
    assert health['problem'] == 'pets' and health['model'] == 'model.pkl' and health['inputs'] == 'image'
    fn = photos[0]
    page, errors = open_page(browser, url, 'pets (model.pkl)')
    page.set_input_files('#file', str(fn))
    label = page.locator('#prediction h2.label')
    label.wait_for(timeout=60_000)
    expected = api_predict(url, fn)['prediction']
    assert label.inner_text().startswith(expected['label'] + ' (')
    assert page.locator('#prediction .bar').count() == min(5, len(expected['probs']))  # the five largest, or all
    assert page.locator('#prediction .bar.top .name').inner_text() == expected['label']
    assert page.locator('#status').inner_text() == fn.name
    assert page.evaluate("document.getElementById('photo').naturalWidth") > 0  # the photo is shown
    screenshot(page, 'serve_pets')
    assert not errors, errors

def test_bad_upload_through_page(server, browser, tmp_path):
    "A file that is not an image: the page shows the server's own error line, and no prediction."
    import httpx
    url, _ = server
    bad = tmp_path/'notes.txt'; bad.write_text('not a picture')
    said = httpx.post(url + 'predict', files=dict(file=(bad.name, bad.read_bytes(), 'text/plain')), timeout=60)
    assert said.status_code == 400 and said.json()['error'].startswith('notes.txt: ')
    page, errors = open_page(browser, url, 'pets (model.pkl)')
    page.set_input_files('#file', str(bad))
    sync_api.expect(page.locator('#status')).to_have_text('Error: ' + said.json()['error'], timeout=30_000)
    assert page.locator('#prediction h2').count() == 0 and not errors, errors

def test_text_model_through_page(text_server, browser):
    "The IMDB model's page shows a text box, not a file picker; a review typed there gets the API's prediction."
    import httpx
    url, health = text_server
    assert health['problem'] == 'imdb' and health['inputs'] == 'text'
    review = 'A wonderful, moving film: the cast is superb and the story stays with you.'
    page, errors = open_page(browser, url, 'imdb (model.pkl)', height=700)
    sync_api.expect(page.locator('#text')).to_be_visible()
    assert not page.locator('#drop').is_visible() and not page.locator('#file').is_visible()
    page.fill('#text', review)
    page.click('#send')
    label = page.locator('#prediction h2.label')
    label.wait_for(timeout=60_000)
    expected = httpx.post(url + 'predict', json=dict(text=review), timeout=60).json()['prediction']
    assert label.inner_text() == f"{expected['label']} ({100 * expected['probability']:.1f}%)"
    assert page.locator('#prediction .bar').count() == len(expected['probs'])   # two classes: both bars
    assert page.locator('#status').inner_text() == review[:60] + '...'
    screenshot(page, 'serve_imdb')
    page.fill('#text', '   ')
    page.click('#send')
    sync_api.expect(page.locator('#status')).to_have_text('Error: text: the text is empty', timeout=30_000)
    assert not errors, errors

def test_every_kind_of_answer(server, browser, photos):
    "The page draws each kind of prediction JSON the course's problems give: tags, a point, a mask."
    url, _ = server
    page, errors = open_page(browser, url, 'pets (model.pkl)')
    page.set_input_files('#file', str(photos[0]))
    page.locator('#prediction h2.label').wait_for(timeout=60_000)
    w, h = page.evaluate("[document.getElementById('photo').naturalWidth, document.getElementById('photo').naturalHeight]")
    # multi-label: the tags above the threshold, and the probabilities with the threshold marked
    page.evaluate("""show({problem: 'pascal', model_ms: 1, prediction: {labels: ['dog', 'person'], threshold: 0.5,
                           probs: {dog: 0.9, person: 0.6, cat: 0.2}}})""")
    assert page.locator('#prediction .tag').all_inner_texts() == ['dog', 'person']
    assert page.locator('#prediction .bar').count() == 3 and page.locator('#prediction .thresh').count() == 3
    # a point: a red dot at that pixel of the photo, nothing far from it
    x, y = w // 3, h // 2
    page.evaluate(f"show({{problem: 'biwi', model_ms: 1, prediction: {{x: {x}, y: {y}}}}})")
    px = lambda x, y: page.evaluate(f"Array.from(document.getElementById('overlay').getContext('2d').getImageData({x}, {y}, 1, 1).data)")
    assert px(x, y) == [238, 0, 0, 255]
    assert px(w - 2, h - 2)[3] == 0
    screenshot(page, 'serve_point')
    # a mask: every pixel of the photo coloured, half transparent, and the class shares as bars
    mask = page.evaluate(f"""(() => {{ const c = document.createElement('canvas'); c.width = {w}; c.height = {h};
        const g = c.getContext('2d'); g.fillStyle = 'rgb(1,1,1)'; g.fillRect(0, 0, {w}, {h});
        g.fillStyle = 'rgb(2,2,2)'; g.fillRect(0, 0, {w // 2}, {h}); return c.toDataURL('image/png'); }})()""")
    page.evaluate("a => show(a)", dict(problem='camvid', model_ms=1, prediction=dict(mask=mask, shares=dict(Road=0.5, Sky=0.5))))
    page.wait_for_function(f"document.getElementById('overlay').getContext('2d').getImageData({w - 2}, {h - 2}, 1, 1).data[3] > 0")
    left, right = px(2, 2), px(w - 2, h - 2)
    assert left[3] == right[3] == 128 and left[:3] != right[:3]
    assert page.locator('#prediction .bar').count() == 2
    screenshot(page, 'serve_mask')
    assert not errors, errors
