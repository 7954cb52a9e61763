"""Every notebook, run as a learner runs it: JupyterLab from .venv, opened in headless Chromium, Run > Run All Cells.

The notebooks are copied to a temporary folder first, so JupyterLab's autosave never touches the repository.
For each notebook we assert: no kernel-selection dialog (the learner lands in a running kernel), every code cell
executed, no error output, the last cell ran. A screenshot of each notebook is kept in tests/screenshots/ (git-ignored),
with each notebook's Run All time in tests/screenshots/run_all_times.txt.
"""
import os, shutil, socket, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT/'tests'/'screenshots'
NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
CHROMIUM = os.environ.get('VISIONCOURSE_CHROMIUM', '/usr/bin/chromium')
TOKEN = 'visioncourse-browser-test'
RUN_ALL_LIMIT_S = 600   # one notebook's Run All on a 2-core CPU takes a few minutes at most

def free_port():
    "A TCP port on the loopback interface that nothing listens on."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_for_server(port, proc, timeout=120):
    "Wait until JupyterLab answers on `port`, failing with its log if it exits first."
    import urllib.request
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None: raise RuntimeError(f"JupyterLab exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={TOKEN}', timeout=2): return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer on port {port} within {timeout} s")

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server from this venv on a free loopback port, serving a copy of nbs/."
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); .ci/run does"
    work = tmp_path_factory.mktemp('lab')
    shutil.copytree(ROOT/'nbs', work/'nbs')
    env = {k: v for k, v in os.environ.items() if k not in ('IN_TEST', 'VISIONCOURSE_REHEARSAL', 'VISIONCOURSE_QUICK')}
    env['JUPYTER_CONFIG_DIR'] = str(work/'.jupyter')    # no user settings of this machine
    env['JUPYTERLAB_SETTINGS_DIR'] = str(work/'.lab-settings')
    env['JUPYTERLAB_WORKSPACES_DIR'] = str(work/'.lab-workspaces')
    port = free_port()
    log = open(work/'jupyterlab.log', 'w')
    proc = subprocess.Popen([str(Path(sys.executable).parent/'jupyter'), 'lab', '--no-browser', f'--port={port}',
                             '--ServerApp.ip=127.0.0.1', f'--IdentityProvider.token={TOKEN}', f'--ServerApp.root_dir={work}',
                             '--LabApp.expose_app_in_browser=True', '--ServerApp.open_browser=False']
                            + (['--allow-root'] if os.geteuid() == 0 else []),
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_server(port, proc)
        yield port
    finally:
        proc.terminate()
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()

@pytest.fixture(scope='module')
def browser():
    "Headless Debian Chromium driven by Playwright."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--no-first-run',
                              '--disable-background-networking', '--disable-component-update', '--disable-sync'])
        yield b
        b.close()

STATE_JS = """() => {
  const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!nb || !nb.content || !nb.content.model || !nb.sessionContext) return null;
  const cells = nb.content.model.cells, kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  const res = {n: 0, done: 0, last: null, errors: [], stderr: [], status: kernel ? kernel.status : 'none'};
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code' || !c.sharedModel.getSource().trim()) continue;
    res.n++; res.last = c.executionCount;
    if (c.executionCount) res.done++;
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j).toJSON();
      if (o.output_type === 'error') res.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
      if (o.output_type === 'stream' && o.name === 'stderr') res.stderr.push(`cell ${i}: ${[].concat(o.text).join('').slice(0, 300)}`);
    }
  }
  return res;
}"""

def wait_state(page, pred, timeout, what):
    "Poll the notebook's state until `pred(state)` holds."
    start = time.time()
    while time.time() - start < timeout:
        state = page.evaluate(STATE_JS)
        if state is not None and pred(state): return state
        time.sleep(1)
    raise AssertionError(f"{what}: not reached within {timeout} s; last state {page.evaluate(STATE_JS)}")

@pytest.mark.parametrize('name', NOTEBOOKS)
def test_run_all_in_jupyterlab(lab, browser, name):
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    try:
        page.goto(f'http://127.0.0.1:{lab}/lab/tree/nbs/{name}?token={TOKEN}', timeout=120_000)
        wait_state(page, lambda s: s['status'] == 'idle', 120, f'{name}: kernel ready')
        assert page.locator('.jp-Dialog').count() == 0, f"{name}: a dialog appeared on opening: {page.locator('.jp-Dialog').inner_text()}"
        start = time.time()
        page.get_by_role('menuitem', name='Run', exact=True).click()
        page.get_by_role('menuitem', name='Run All Cells', exact=True).click()
        state = wait_state(page, lambda s: s['errors'] or (s['done'] == s['n'] and s['status'] == 'idle'),
                           RUN_ALL_LIMIT_S, f'{name}: Run All')
        secs = time.time() - start
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS/f'{Path(name).stem}.png'))
        with open(SHOTS/'run_all_times.txt', 'a') as f: f.write(f"{name}: {secs:.0f} s, {state['n']} code cells\n")
        assert not state['errors'], f"{name}: error output in {state['errors']}"
        assert state['done'] == state['n'] and state['last'], f"{name}: {state['done']} of {state['n']} code cells ran"
        assert page.locator('.jp-Dialog').count() == 0, f"{name}: a dialog appeared: {page.locator('.jp-Dialog').inner_text()}"
        assert not state['stderr'], f"{name}: warnings or errors printed: {state['stderr']}"
    finally:
        try: page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception: pass
        page.close()
