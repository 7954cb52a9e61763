"""Every notebook, run as a learner runs it: JupyterLab from .venv, opened in headless Chromium, Run > Run All Cells.

The notebooks are copied to a temporary folder first, so JupyterLab's autosave never touches the repository.
For each notebook we assert: no kernel-selection dialog (the learner lands in a running kernel), every code cell
executed, no error output, the last cell ran. Notebooks run two at a time (VISIONCOURSE_BROWSER_PARALLEL), each in
its own kernel, in one of two pages, as two learners would; a page opens its next notebook when its last one is closed.
A screenshot of each notebook is kept in tests/screenshots/ (git-ignored), with each notebook's Run All time in
tests/screenshots/run_all_times.txt.
"""
import os, shutil, subprocess, sys, time
from pathlib import Path
import pytest
from helpers import free_port

pytestmark = pytest.mark.slow   # `browser` (conftest.py): skipped with one line without Chromium, required under CI=true

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT/'tests'/'screenshots'
# Largest first (a rough guess at the longest), so that no long notebook is left running alone at the end
NOTEBOOKS = [p.name for p in sorted((ROOT/'nbs').glob('*.ipynb'), key=lambda p: (-p.stat().st_size, p.name))]
TOKEN = 'visioncourse-browser-test'
RUN_ALL_LIMIT_S = 600   # one notebook's Run All on a 2-core CPU takes a few minutes at most
# Notebooks run side by side, each in its own kernel: a kernel importing fastai or decoding images uses one core.
PARALLEL = int(os.environ.get('VISIONCOURSE_BROWSER_PARALLEL', '2'))
# VISIONCOURSE_BROWSER_REHEARSAL=1: the kernels run as under `nbdev_test --flags cuda` (quick sizes, `#| cuda` cells
# rehearsed on the CPU), so that this one Run All of each notebook also serves nbdev_test's check (`make test`).
REHEARSE = os.environ.get('VISIONCOURSE_BROWSER_REHEARSAL', '') == '1'

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
    work = tmp_path_factory.mktemp('lab')
    shutil.copytree(ROOT/'nbs', work/'nbs')
    env = {k: v for k, v in os.environ.items() if k not in ('IN_TEST', 'VISIONCOURSE_REHEARSAL', 'VISIONCOURSE_QUICK')}
    if REHEARSE:   # what nbdev_test --flags cuda runs, under `make test`
        env.update(IN_TEST='1', VISIONCOURSE_REHEARSAL='1', IPYTHONDIR=str(work/'.ipython'))
        # ... with the kernels loading batches themselves (fastai's `defaults.cpus = 0`: no DataLoader worker processes):
        # beside the rest of pytest the cores are busy anyway, and forking and feeding workers cost 01_pets a fifth
        # of its CPU time (bench/RESULTS.md). nbdev_test (`make test-python`, `make nbtest`) keeps fastai's workers.
        startup = work/'.ipython'/'profile_default'/'startup'
        startup.mkdir(parents=True)
        (startup/'00-no-workers.py').write_text('import fastcore.basics\nfastcore.basics.defaults.cpus = 0\n')
    env['JUPYTER_CONFIG_DIR'] = str(work/'.jupyter')    # no user settings of this machine
    if PARALLEL > 1: env.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1)//PARALLEL)))  # share the cores
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

STATE_JS = """(path) => {
  const app = window.jupyterapp;
  let nb = null;
  if (app) for (const w of app.shell.widgets('main')) if (w.context && w.context.path === path) { nb = w; break; }
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
      if (o.output_type === 'stream' && o.name === 'stderr')
        res.stderr.push({cuda: /^#[|][ \t]*cuda/m.test(c.sharedModel.getSource()), text: `cell ${i}: ${[].concat(o.text).join('').slice(0, 300)}`});
    }
  }
  return res;
}"""

class RunAll:
    """One notebook's Run All: open it (in a new page, or in `page`, a page whose last notebook is closed), wait for the
    kernel, click Run > Run All Cells, then `poll`. Opening the next notebook in the same page spares a reload of JupyterLab."""
    def __init__(self, browser, port, name, page=None):
        self.name, self.page, self.problems = name, page, []
        try:
            if page is None:
                # a workspace of its own, so that this page does not reopen the notebooks other pages have open
                self.page = browser.new_page(viewport={'width': 1280, 'height': 900})
                workspace = Path(name).stem.replace('_', '-')
                self.page.goto(f'http://127.0.0.1:{port}/lab/workspaces/{workspace}/tree/nbs/{name}?reset&token={TOKEN}', timeout=120_000)
            else: self.page.evaluate("async (path) => { await window.jupyterapp.commands.execute('docmanager:open', {path}); }",
                                    f'nbs/{name}')   # (the widget it opens is not returned: it cannot be serialised)
            self.wait(lambda s: s['status'] == 'idle', 120, 'kernel ready')
            self.check_dialog('on opening')
            self.start = time.time()
            self.page.get_by_role('menuitem', name='Run', exact=True).click()
            self.page.get_by_role('menuitem', name='Run All Cells', exact=True).click()
        except Exception:
            if self.page is not None: self.page.close()
            raise

    def state(self): return self.page.evaluate(STATE_JS, f'nbs/{self.name}')

    def wait(self, pred, timeout, what):
        "Poll the notebook's state until `pred(state)` holds."
        start = time.time()
        while time.time() - start < timeout:
            state = self.state()
            if state is not None and pred(state): return state
            time.sleep(1)
        raise AssertionError(f"{self.name}: {what}: not reached within {timeout} s; last state {self.state()}")

    def check_dialog(self, when):
        dialogs = self.page.locator('.jp-Dialog')
        if dialogs.count(): self.problems.append(f"a dialog appeared {when}: {dialogs.first.inner_text()}")

    def poll(self):
        "The final state once every cell ran or one failed (or the time limit passed), else `None`."
        state = self.state()
        timed_out = time.time() - self.start > RUN_ALL_LIMIT_S
        if not (timed_out or (state and (state['errors'] or (state['done'] == state['n'] and state['status'] == 'idle')))):
            return None
        state = state or dict(n=0, done=0, last=None, errors=[], stderr=[], status='none')
        self.secs = time.time() - self.start
        if timed_out: self.problems.append(f"Run All not finished within {RUN_ALL_LIMIT_S} s; last state {state}")
        self.check_dialog('while running')
        SHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SHOTS/f'{Path(self.name).stem}.png'))
        with open(SHOTS/'run_all_times.txt', 'a') as f:
            f.write(f"{self.name}: {self.secs:.0f} s, {state['n']} code cells ({PARALLEL} notebooks at a time)\n")
        return state

    def close(self):
        "Shut the notebook's kernel down and close it, without a save dialog; the page, still open, is returned for the next one."
        try:
            self.page.evaluate("""async (path) => { for (const w of Array.from(window.jupyterapp.shell.widgets('main')))
                                    if (w.context && w.context.path === path) { await w.sessionContext.shutdown(); w.dispose(); } }""",
                               f'nbs/{self.name}')
            return self.page
        except Exception:
            self.page.close()
            return None

@pytest.fixture(scope='module')
def run_all(request, lab, browser):
    "Run All in each selected notebook, `PARALLEL` at a time (each in its own kernel, pages reused): name -> (state, problems)."
    pending = [item.callspec.params['name'] for item in request.session.items
               if getattr(item, 'originalname', None) == 'test_run_all_in_jupyterlab']
    results, running, free_pages = {}, {}, []
    while pending or running:
        while pending and len(running) < PARALLEL:
            name = pending.pop(0)
            try: running[name] = RunAll(browser, lab, name, free_pages.pop() if free_pages else None)
            except Exception as e: results[name] = (None, [f"{type(e).__name__}: {e}"])
        for name, run in list(running.items()):
            state = run.poll()
            if state is None: continue
            results[name] = (state, run.problems); del running[name]
            # a page whose notebook failed or timed out is not reused: it may hold a dialog or a half-closed notebook
            page = run.close()
            if page is not None and (run.problems or state['errors']): page.close()
            elif page is not None: free_pages.append(page)
        time.sleep(1)
    for page in free_pages: page.close()
    return results

@pytest.mark.parametrize('name', NOTEBOOKS)
def test_run_all_in_jupyterlab(run_all, name):
    state, problems = run_all[name]
    assert state is not None, f"{name}: {problems}"
    assert not state['errors'], f"{name}: error output in {state['errors']}"
    assert not problems, f"{name}: {problems}"
    assert state['done'] == state['n'] and state['last'], f"{name}: {state['done']} of {state['n']} code cells ran"
    # a rehearsed GPU cell may warn that there is no GPU (fastai's fp16 callback); nbdev_test does not look at stderr
    stderr = [e['text'] for e in state['stderr'] if not (REHEARSE and e['cuda'])]
    assert not stderr, f"{name}: warnings or errors printed: {stderr}"
