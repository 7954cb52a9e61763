"""What the tests share besides fixtures (those are in conftest.py): the command line in this process, the small training
settings, the stand-in pretrained weights, cuts of the datasets, and finding Chromium. Tests import it as `helpers`
(pytest.ini puts tests/ on the path); nothing imports conftest.py or another test file."""
import contextlib, importlib.util, io, os, shutil, socket, sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]

# --- the command line, in this process ---

# Small and fast: 32-pixel images, one epoch, random weights.
SMALL = ['--epochs', '1', '--size', '32', '--bs', '16', '--arch', 'resnet18', '--no-pretrained']
# ULMFiT at the smallest settings that still train both stages: random weights, one epoch, batches of 8.
IMDB_SMALL = ['--epochs', '1', '--bs', '8', '--lr', '1e-2', '--no-pretrained']

def run_cli(*args):
    "Run `visioncourse ARGS` in this process; the result looks like `subprocess.run`'s (returncode, stdout, stderr)."
    from visioncourse.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

def train(out, problem, *args):
    "`visioncourse train problem ARGS --out out` in this process, which must succeed: its `out` folder and printed log."
    res = run_cli('train', problem, *args, '--out', out)
    assert res.returncode == 0, res.stderr[-3000:]
    return SimpleNamespace(out=Path(out), log=res.stdout)

def train_small(tmp_path_factory, problem, *extra):
    "Train `problem` at `SMALL` settings into a fresh temporary folder: its `out` folder and the printed log."
    return train(tmp_path_factory.mktemp(f'{problem}_run')/problem, problem, *SMALL, *extra)

# --- cuts of the datasets: tools/cut_data.py, the tool a maintainer runs by hand ---

def _cut_data():
    spec = importlib.util.spec_from_file_location('cut_data', ROOT/'tools'/'cut_data.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

cut_data = _cut_data()

def cut(name, dest, n=None, **sizes):
    "A cut of dataset `name` (wherever `dataset_path` finds it) in `dest/name`, by tools/cut_data.py: see its sizes."
    from visioncourse.data import dataset_path
    return cut_data.cut_folder(name, dataset_path(name), Path(dest)/name, n, **sizes)

def breeds_of_each(images):
    "The pet breed of each image file in `images` (fastai's PETS layout: the file name before `_<number>.jpg`)."
    return [Path(f).stem.rsplit('_', 1)[0] for f in images]

# --- stand-in pretrained weights ---

IMAGENET_ARCHS = ('resnet18', 'resnet34', 'resnet50')   # the course's architectures (the problems' defaults, `--arch`)
WT103_FILES = ('lstm_fwd.pth', 'itos_wt103.pkl')        # what fastai's wt103-fwd.tgz unpacks to
WT103_VOCAB = ['xxunk', 'xxpad', 'xxbos', 'xxeos', 'xxfld', 'xxrep', 'xxwrep', 'xxup', 'xxmaj',   # fastai's special tokens
               'the', ',', '.', 'and', 'a', 'of', 'to', 'is', 'it', 'in', 'i', 'this', 'that', 'was', 'as', 'with',
               'movie', 'film', 'for', 'but', 'on', 'not', 'you', 'he', 'his', 'are', 'have', 'be', 'one', 'all',
               'at', 'they', 'by', 'an', 'who', 'so', 'from', 'like', 'there', 'her', 'or', 'just', 'about', 'good']

def imagenet_checkpoint(arch):
    "The file name torchvision caches `arch`'s default ImageNet weights under (what fastai's `vision_learner` loads)."
    import torchvision
    return torchvision.models.get_model_weights(arch).DEFAULT.url.split('/')[-1]

@contextlib.contextmanager
def standin_weights(torch_home, fastai_home):
    """Point torch and fastai at the stand-in weights, and the course's reachability check at "offline", until the block ends.
    The weights are random: what runs with them tests the code of the pretrained path (loading, freezing, rates,
    normalisation), never the accuracy that real ImageNet or WikiText-103 weights would give."""
    import pytest
    import visioncourse.data
    from fastai.data.external import fastai_cfg
    real = visioncourse.data.can_reach
    def offline(*args, **kwargs): return False
    def course_modules(): return [m for n, m in list(sys.modules.items()) if n.split('.')[0] == 'visioncourse']
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('TORCH_HOME', str(torch_home))
            mp.setenv('FASTAI_HOME', str(fastai_home))
            for mod in course_modules():      # whichever course module asks, the internet is out of reach
                if getattr(mod, 'can_reach', None) is real: mp.setattr(mod, 'can_reach', offline)
            fastai_cfg.cache_clear()          # fastai reads FASTAI_HOME once and caches its config
            yield SimpleNamespace(torch_home=torch_home, fastai_home=fastai_home)
    finally:
        fastai_cfg.cache_clear()
        for mod in course_modules():          # a module first imported in the block took `offline` from visioncourse.data
            if getattr(mod, 'can_reach', None) is offline: mod.can_reach = real

# --- the real browser ---

def free_port():
    "A TCP port on the loopback interface that nothing listens on."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

INSTALL_CHROMIUM = (f"{Path(sys.executable).parent/'python'} -m playwright install chromium "
                    "(no root needed), or set VISIONCOURSE_CHROMIUM to a Chromium or Chrome binary")

def find_chromium():
    """The Chromium the browser tests drive: `$VISIONCOURSE_CHROMIUM` when set, else one on the PATH or in the usual
    places (Debian's, a Mac's), else Playwright's own download (`playwright install chromium`); `None` if there is none."""
    if env := os.environ.get('VISIONCOURSE_CHROMIUM'): return env if Path(env).is_file() else None
    for name in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'):
        if found := shutil.which(name): return found
    for p in ('/usr/bin/chromium', '/Applications/Chromium.app/Contents/MacOS/Chromium',
              '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome'):
        if Path(p).is_file(): return p
    return _playwright_chromium()

def _playwright_chromium():
    "The browser `playwright install chromium` downloaded (headless shell first), or `None`."
    base = Path(os.environ.get('PLAYWRIGHT_BROWSERS_PATH') or
                (Path.home()/'Library'/'Caches'/'ms-playwright' if sys.platform == 'darwin' else Path.home()/'.cache'/'ms-playwright'))
    pats = ('chromium_headless_shell-*/chrome-*/headless_shell', 'chromium-*/chrome-linux*/chrome',
            'chromium-*/chrome-mac*/Chromium.app/Contents/MacOS/Chromium',
            'chromium-*/chrome-mac*/Google Chrome for Testing.app/Contents/MacOS/Google Chrome for Testing')
    found = [p for pat in pats for p in sorted(base.glob(pat)) if p.is_file()] if base.is_dir() else []
    return str(found[-1]) if found else None

def launch_chromium(playwright, executable):
    "Headless Chromium at `executable`, without the background traffic a first run makes."
    return playwright.chromium.launch(executable_path=executable, args=[
        '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update',
        '--disable-sync'])
