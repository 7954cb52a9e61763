"""Issue 26: every lesson's sizes, under quick and book settings, on a machine with a CUDA GPU and on one without.

The GPU is faked (`torch.cuda.is_available`, `mem_get_info`, `get_device_name`, ...), so this runs where CI runs. For
each lesson notebook the test executes the notebook's own cells, in order, from the top to the cell that builds its
main `DataLoaders` (`dls = ...`): the settings cell and every cell that derives a size from it. `#| cuda` cells are
not executed; their `gpu_settings(...)` statement is. Then it checks:
- quick settings are the quick sizes on any device: the same settings and the same batches with and without a GPU;
- the training `DataLoader` has at least one batch (fastai drops the last partial training batch) on the sample,
  and on the full dataset's size (its training share estimated from the split the notebook made of the sample);
- every `lr_find` in the notebook keeps enough points for the suggestions it asks for: its `num_it=` expression,
  taken from the notebook and evaluated with 1 training batch (the fewest), the sample's and the full dataset's
  number, keeps points on which fastai's suggestion functions (the call's `suggest_funcs`) run.

Run: OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_lesson_settings.py
"""
import ast, contextlib, functools, os, re, shutil, tempfile, warnings
from pathlib import Path
from types import SimpleNamespace
from unittest import mock
import pytest, torch
from execnb.nbio import read_nb
from visioncourse.settings import finder_iters, gpu_settings

NBS = Path(__file__).resolve().parents[1]/'nbs'
LESSONS = ['01_pets', '02_multilabel', '03_keypoints', '05_planet', '06_camvid', '07_imdb', '08_serve']
# The full datasets' sizes (items the lesson's DataLoaders split into training and validation), from their sources.
FULL = {'01_pets': 7390,         # Oxford-IIIT Pet: 7,390 photos (fastbook 05_pet_breeds; fastai URLs.PETS)
        '02_multilabel': 5011,   # PASCAL VOC 2007 trainval: 5,011 rows in fastai's PASCAL_2007 train.csv
        '03_keypoints': 15677,   # BIWI Kinect Head Pose: 15,677 annotated frames (db_annotations, see the sample's README)
        '05_planet': 40479,      # Planet: 40,479 chips in the Kaggle competition's train_v2.csv (course-v3 lesson3-planet)
        '06_camvid': 701,        # CamVid: 701 frames (fastai URLs.CAMVID, see the sample's README)
        '07_imdb': 50000,        # IMDB: 50,000 labelled reviews, 25,000 train + 25,000 test (aclImdb)
        '08_serve': 7390}        # the pets lesson's data
GIB = 2**30

def flags(source):
    "The `#| name` directives of a cell."
    return set(re.findall(r'^#\|\s*([\w-]+)', source, flags=re.M))

def assigns(source, name):
    "Whether the cell's code assigns `name` at its top level."
    try: tree = ast.parse(source)
    except SyntaxError: return False   # IPython syntax (a magic): not a DataLoaders cell
    return any(isinstance(t, ast.Name) and t.id == name for n in tree.body if isinstance(n, ast.Assign) for t in n.targets)

def code_cells(lesson):
    return [c.source for c in read_nb(NBS/f'{lesson}.ipynb').cells if c.cell_type == 'code']

def main_line(lesson):
    "The code to execute: the code cells from the top to the main `dls = ...` (without `#| cuda` or `eval: false` cells)."
    cells = [c for c in code_cells(lesson) if 'cuda' not in flags(c) and 'eval' not in flags(c) and 'nbdev_export(' not in c]
    end = next((i for i, c in enumerate(cells) if assigns(c, 'dls')), None)
    assert end is not None, f"{lesson}: no cell assigns `dls`"
    node = next(n for n in ast.parse(cells[end]).body if isinstance(n, ast.Assign) and any(getattr(t, 'id', '') == 'dls' for t in n.targets))
    return cells[:end] + [''.join(cells[end].splitlines(keepends=True)[:node.end_lineno])]   # that cell up to its `dls = ...`

@contextlib.contextmanager
def device(gpu, free_gib=139):
    "A machine with (`gpu=True`: a faked 141 GiB NVIDIA H200, `free_gib` GiB free) or without a CUDA GPU."
    import fastai.torch_core
    cuda = torch.cuda
    with contextlib.ExitStack() as st:
        st.enter_context(mock.patch.object(cuda, 'is_available', lambda: gpu))
        if gpu:
            st.enter_context(mock.patch.object(cuda, 'mem_get_info', lambda *a, **k: (free_gib*GIB, 141*GIB)))
            st.enter_context(mock.patch.object(cuda, 'get_device_name', lambda *a, **k: 'NVIDIA H200 (faked)'))
            st.enter_context(mock.patch.object(cuda, 'empty_cache', lambda: None))
            st.enter_context(mock.patch.object(cuda, 'device_count', lambda: 1))
            # fastai would put the DataLoaders (and Normalize's statistics) on the GPU: keep them on the CPU, where
            # they have the same sizes. Nothing here touches the faked device.
            st.enter_context(mock.patch.object(fastai.torch_core.defaults, 'use_cuda', False))
        yield

def settings_env(mode):
    return mock.patch.dict(os.environ, VISIONCOURSE_QUICK='1' if mode == 'quick' else '0', VISIONCOURSE_REHEARSAL='1',
                           VISIONCOURSE_GPU_BS_SCALE='', VISIONCOURSE_WORKERS='')

def exported(lesson):
    "The public names of the library module the notebook exports (`#| default_exp`), if any."
    import importlib
    m = re.search(r'^#\|\s*default_exp\s+(\S+)', '\n'.join(code_cells(lesson)), flags=re.M)
    if not m: return {}
    return {k: v for k, v in vars(importlib.import_module(f'visioncourse.{m.group(1)}')).items() if not k.startswith('_')}

def gpu_cells(lesson, ns):
    """For each `#| cuda` cell: its `g = gpu_settings(...)` and the `DataLoaders` it builds (each `dls...` assignment,
    with the cell's earlier assignments it reads), executed in the notebook's namespace `ns` on the CPU."""
    found = []
    for c in code_cells(lesson):
        if 'cuda' not in flags(c): continue
        body = [n for n in ast.parse(c).body if isinstance(n, ast.Assign) and all(isinstance(t, ast.Name) for t in n.targets)]
        setting = [n for n in body if isinstance(n.value, ast.Call) and getattr(n.value.func, 'id', '') == 'gpu_settings']
        if not setting: continue
        env = {**exported(lesson), **ns}   # a GPU cell may use a function the notebook defines after its main line
        exec(compile(ast.Module(setting, []), lesson, 'exec'), env)
        g = env[setting[0].targets[0].id]
        g.device = torch.device('cpu')   # the sizes do not depend on where the batches go
        defs = {t.id: n for n in body for t in n.targets}
        def needs(node, seen):
            "The cell's earlier assignments that `node` reads, in order, then `node`."
            out = []
            for name in sorted({x.id for x in ast.walk(node.value) if isinstance(x, ast.Name)}):
                d = defs.get(name)
                if d is not None and d is not node and d not in seen and d not in setting and body.index(d) < body.index(node):
                    seen.add(d); out += needs(d, seen)
            return out + [node]
        loaders = {}
        for n in body:
            name = n.targets[0].id
            if name.startswith('dls') and n not in setting:
                exec(compile(ast.Module(needs(n, set()), []), lesson, 'exec'), env)
                loaders[name] = env[name]
        found.append(SimpleNamespace(g=g, loaders={k: (len(d.train), d.train.bs, len(d.train_ds), len(d.valid_ds)) for k, d in loaders.items()}))
    return found

def run(lesson, mode, gpu, free_gib=139):
    "Execute `lesson`'s main line up to its `dls` under `mode` settings, with or without a GPU (`free_gib` free): what its cells would use."
    return _run(lesson, mode, gpu, free_gib)   # one run per case, however the call spells it

@functools.lru_cache(maxsize=None)
def _run(lesson, mode, gpu, free_gib):
    from execnb.shell import CaptureShell
    cwd = os.getcwd()
    with settings_env(mode), device(gpu, free_gib), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        shell = CaptureShell(NBS/f'{lesson}.ipynb')
        os.chdir(NBS)
        try:
            for i, code in enumerate(main_line(lesson)):
                shell.run(code)
                if shell.exc: raise AssertionError(f"{lesson} ({mode}, {'GPU' if gpu else 'no GPU'}): cell {i} failed: {shell.exc!r}") from shell.exc
        finally: os.chdir(cwd)
        ns = shell.user_ns
        s, dls = ns['s'], ns['dls']
        gpu = gpu_cells(lesson, ns)
        n_train, n_valid = len(dls.train_ds), len(dls.valid_ds)
    work = ns.get('work')   # the temporary folder some lessons make for their learners' files
    if isinstance(work, Path) and work.parent == Path(tempfile.gettempdir()): shutil.rmtree(work, ignore_errors=True)
    shell.reset(); del shell
    return SimpleNamespace(s=s, values=s.values(), bs=dls.train.bs, n_train=n_train, n_valid=n_valid,
                           batches=len(dls.train), drop_last=dls.train.drop_last, gpu_cells=gpu)

def full_batches(lesson, r, bs=None, n_items=None):
    "Training batches of a run `r` on the full dataset: its items (capped by `n_items` or `frac`), the sample's training share, batch `bs`."
    s, full = r.s, FULL[lesson]
    n_items = n_items if n_items is not None else getattr(s, 'n_items', None)
    used = min(n_items, full) if n_items is not None else int(full*getattr(s, 'frac', 1.0))
    return int(used*r.n_train/(r.n_train + r.n_valid)) // (bs or r.bs)

def finder_calls(lesson):
    "Each `lr_find(...)` call of the notebook: (whether in a `#| cuda` cell, its `num_it=` and `suggest_funcs=` sources or None)."
    calls = []
    for c in code_cells(lesson):
        try: tree = ast.parse(c)
        except SyntaxError: continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'lr_find':
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append(('cuda' in flags(c), kw.get('num_it'), kw.get('suggest_funcs')))
    return calls

def kept(num_it):
    "How many points `lr_find(num_it=num_it)` hands its suggestions: `lrs[num_it//10:-5]` (fastai/callback/schedule.py, line 298)."
    return len(range(num_it)[num_it//10:-5])

def suggestion_problem(num_it, funcs_src):
    "Run the suggestion functions `funcs_src` (fastai's default: `valley`) on the points `lr_find(num_it=num_it)` keeps: what fails, or None."
    from fastai.callback.schedule import valley, slide, steep, minimum, SuggestionMethod
    funcs = (valley,) if funcs_src is None else eval(funcs_src, dict(valley=valley, slide=slide, steep=steep, minimum=minimum,
                                                                     SuggestionMethod=SuggestionMethod))
    n = kept(num_it)
    lrs, losses = torch.logspace(-7, 1, num_it)[num_it//10:][:n], torch.cat([torch.linspace(3, 1, n - n//3), torch.linspace(1, 4, n//3)])
    for f in funcs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')   # slide's np.interp on tensors: a NumPy deprecation inside fastai
                f(lrs, losses, num_it)
        except (IndexError, ValueError, RuntimeError) as e:
            return f"lr_find keeps {n} point(s), and {getattr(f, '__name__', f)} fails ({type(e).__name__})"
    return None

class Loaders:
    "Stands for any `DataLoaders` (or learner) in a `num_it=` expression: `len(x.train)` and `len(x.dls.train)` are `n`."
    def __init__(self, n): self.train, self.dls = range(n), self

def finder_problem(num_it_src, funcs_src, ns, n_batches):
    "What goes wrong with an `lr_find(num_it=num_it_src, suggest_funcs=funcs_src)` of the notebook when its loader has `n_batches` training batches."
    import builtins
    names = {n.id for n in ast.walk(ast.parse(num_it_src or '0')) if isinstance(n, ast.Name)} - set(ns) - set(dir(builtins))
    num_it = 100 if num_it_src is None else eval(num_it_src, {**ns, **{n: Loaders(n_batches) for n in names}})
    problem = suggestion_problem(num_it, funcs_src)
    return problem and f"num_it={num_it_src} with {n_batches} training batch(es) = {num_it}: {problem}"

CASES = [(l, m, g) for l in LESSONS for m in ('quick', 'book') for g in (False, True)]
def case_id(c): return f"{c[0]}-{c[1]}-{'gpu' if c[2] else 'cpu'}"

@pytest.mark.parametrize('lesson', LESSONS)
def test_quick_settings_are_the_same_on_every_device(lesson):
    cpu, gpu = run(lesson, 'quick', False), run(lesson, 'quick', True)
    assert gpu.values == cpu.values, f"{lesson}: quick settings differ with a GPU: {gpu.values} against {cpu.values}"
    assert (gpu.bs, gpu.n_train, gpu.batches) == (cpu.bs, cpu.n_train, cpu.batches), (
        f"{lesson}: quick DataLoaders differ with a GPU: batch size {gpu.bs}, {gpu.n_train} training items, {gpu.batches} batches "
        f"against batch size {cpu.bs}, {cpu.n_train} items, {cpu.batches} batches without one (quick must be quick on any device)")

@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_training_loader_has_a_batch(case):
    lesson, mode, gpu = case
    r = run(*case)
    assert r.drop_last, f"{lesson}: the training DataLoader keeps its last partial batch"   # what the checks below rely on
    assert r.batches >= 1 and r.n_train >= r.bs, f"{case_id(case)}: {r.n_train} training items at batch size {r.bs}: no training batch on the sample"
    assert full_batches(lesson, r) >= 1, f"{case_id(case)}: no training batch at batch size {r.bs} on the full dataset ({FULL[lesson]} items)"

GPU_CASES = [(l, 'quick', g) for l in LESSONS for g in (False, True)]

@pytest.mark.parametrize('case', GPU_CASES, ids=case_id)
def test_gpu_cells_loaders_have_a_batch(case):
    "Each `#| cuda` cell's DataLoaders: on a GPU at the book's sizes, in a rehearsal at the quick ones (its sizes depend on the device only)."
    lesson, _, gpu = case
    r = run(*case)
    for cell in r.gpu_cells:
        for name, (batches, bs, n_train, n_valid) in cell.loaders.items():
            assert batches >= 1, f"{case_id(case)}: GPU cell's {name}: {n_train} training items at batch size {bs}: no training batch on the sample"
            full = FULL[lesson] if getattr(cell.g, 'n_items', None) is None else min(cell.g.n_items, FULL[lesson])
            assert int(full*n_train/(n_train + n_valid)) // bs >= 1, f"{case_id(case)}: GPU cell's {name}: no training batch on the full dataset"

@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_every_lr_find_keeps_enough_points(case):
    lesson, mode, gpu = case
    r = run(*case)
    ns = dict(s=r.s, finder_iters=finder_iters, gpu_settings=gpu_settings)
    for in_gpu_cell, num_it, funcs in finder_calls(lesson):
        if in_gpu_cell: assert r.gpu_cells, f"{lesson}: an lr_find in a GPU cell, but no `g = gpu_settings(...)` found"
        for cell in (r.gpu_cells if in_gpu_cell else [None]):
            env = {**ns, 'g': cell.g} if cell is not None else ns
            own = [b for b, *_ in cell.loaders.values()] if cell is not None else [r.batches, full_batches(lesson, r)]
            for n in (1, *own):
                problem = finder_problem(num_it, funcs, env, n)
                assert problem is None, f"{case_id(case)}: {'a GPU cell' if in_gpu_cell else 'the main line'}'s lr_find: {problem}"

@pytest.mark.parametrize('mode, gpu, free_gib, bs', [('quick', False, 139, None), ('quick', True, 139, None),
    ('book', False, 139, 4), ('book', True, 139, 8), ('book', True, 4, 4)])
def test_camvid_batch_size_is_the_settings(mode, gpu, free_gib, bs):
    "06: its DataLoaders take the settings' `bs`; at the book's, the lesson's by free GPU memory: 8 above 8,200 MB, else 4 (and 4 without a GPU)."
    r = run('06_camvid', mode, gpu, free_gib)
    assert r.bs == r.s.bs, f"06 ({mode}): the DataLoaders' batch size {r.bs} is not the settings' bs {r.s.bs}"
    if bs is not None: assert r.bs == bs, f"06 (book, {free_gib if gpu else 'no'} GiB GPU memory free): batch size {r.bs}, not the lesson's {bs}"

def test_the_finder_check_fails_on_a_finder_with_too_few_points():
    "4 iterations (06's quick finder on a GPU at 17941e6) keep no point: the check reports fastai's `valley` failing."
    assert 'valley fails (IndexError)' in finder_problem('4', None, {}, 1)
    assert 'slide fails (IndexError)' in finder_problem('20', '(minimum, steep, valley, slide)', {}, 1)   # 13 points
    assert finder_problem('finder_iters(len(dls.train), passes=1, least=4)', '(minimum, steep, valley, slide)',
                          dict(finder_iters=finder_iters), 1) is None

@pytest.mark.parametrize('num_it', [4, 23])
def test_kept_is_what_fastai_keeps(num_it, tmp_path):
    "`kept` against a real `lr_find` on a tiny model (a bounded loss, no early stop): the points its recorder hands on."
    from fastai.basics import Learner, DataLoaders, TfmdDL, SGD
    xs = torch.linspace(-1, 1, 8)[:, None]
    dl = lambda: TfmdDL(list(zip(xs, xs)), bs=8)
    learn = Learner(DataLoaders(dl(), dl()), torch.nn.Linear(1, 1), loss_func=lambda out, y: torch.sigmoid(out).mean(),
                    opt_func=SGD, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.lr_find(num_it=num_it, stop_div=False, show_plot=False, suggest_funcs=None)
    assert len(learn.recorder.lrs[num_it//10:-5]) == kept(num_it)   # what lr_find slices off its recorder, line 298
