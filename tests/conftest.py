"""Shared fixtures. Each small model is trained once per test session, in this process, and reused by every test
file (the CLI tests, the serve tests): `pets_model`, `pascal_model`, `biwi_model`, `imdb_model` are the paths of their model.pkl."""
import contextlib, io, shutil
from types import SimpleNamespace
import pytest
from visioncourse.data import dataset_path

# Small and fast: 32-pixel images, one epoch, random weights.
SMALL = ['--epochs', '1', '--size', '32', '--bs', '16', '--arch', 'resnet18', '--no-pretrained']

def run_cli(*args):
    "Run `visioncourse ARGS` in this process; the result looks like `subprocess.run`'s (returncode, stdout, stderr)."
    from visioncourse.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

@pytest.fixture(scope='session')
def cli():
    "`run_cli`: the command line, called in-process."
    return run_cli

@pytest.fixture(scope='session')
def pets_small(tmp_path_factory):
    "A copy of the pets sample with two breeds (a cat and a dog), to keep training fast."
    dst = tmp_path_factory.mktemp('data')/'pets'
    (dst/'images').mkdir(parents=True)
    for f in (dataset_path('pets')/'images').glob('*.jpg'):
        if f.name.startswith(('Abyssinian_', 'beagle_')): shutil.copy(f, dst/'images'/f.name)
    return dst

def imdb_small(folder):
    "Write into `folder/imdb_sample` the first 40 training and 20 validation sample reviews, cut to 40 words; return it."
    import csv
    rows = list(csv.reader(open(dataset_path('imdb_sample')/'texts.csv', newline='', encoding='utf-8')))
    data = folder/'imdb_sample'; data.mkdir()
    keep = [r for r in rows[1:] if r[2] == 'False'][:40] + [r for r in rows[1:] if r[2] == 'True'][:20]
    with open(data/'texts.csv', 'w', newline='', encoding='utf-8') as f:
        csv.writer(f).writerows(rows[:1] + [r[:1] + [' '.join(r[1].split()[:40])] + r[2:] for r in keep])
    return data

# ULMFiT at the smallest settings that still train both stages: random weights, one epoch, batches of 8.
IMDB_SMALL = ['--epochs', '1', '--bs', '8', '--lr', '1e-2', '--no-pretrained']

def _train(tmp_path_factory, problem, *extra):
    "Train `problem` small into a fresh temporary folder; its `out` folder and the printed log."
    out = tmp_path_factory.mktemp(f'{problem}_run')/problem
    res = run_cli('train', problem, *SMALL, *extra, '--out', out)
    assert res.returncode == 0, res.stderr[-3000:]
    return SimpleNamespace(out=out, log=res.stdout)

@pytest.fixture(scope='session')
def pets_run(tmp_path_factory, pets_small): return _train(tmp_path_factory, 'pets', '--data', pets_small)

@pytest.fixture(scope='session')
def pascal_run(tmp_path_factory): return _train(tmp_path_factory, 'pascal')

@pytest.fixture(scope='session')
def biwi_run(tmp_path_factory): return _train(tmp_path_factory, 'biwi')

@pytest.fixture(scope='session')
def imdb_run(tmp_path_factory):
    "`visioncourse train imdb` (ULMFiT) at `IMDB_SMALL` on `imdb_small`'s 60 reviews: its `out` folder and log."
    tmp = tmp_path_factory.mktemp('imdb_run')
    res = run_cli('train', 'imdb', *IMDB_SMALL, '--data', imdb_small(tmp), '--out', tmp/'imdb')
    assert res.returncode == 0, res.stderr[-3000:]
    return SimpleNamespace(out=tmp/'imdb', log=res.stdout)

@pytest.fixture(scope='session')
def imdb_model(imdb_run): return imdb_run.out/'model.pkl'

@pytest.fixture(scope='session')
def pets_model(pets_run): return pets_run.out/'model.pkl'

@pytest.fixture(scope='session')
def pascal_model(pascal_run): return pascal_run.out/'model.pkl'

@pytest.fixture(scope='session')
def biwi_model(biwi_run): return biwi_run.out/'model.pkl'

# --- stand-in pretrained weights: the code path of an online learner, offline ---

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

@pytest.fixture(scope='session')
def standin_torch_home(tmp_path_factory):
    "A private `TORCH_HOME` whose `hub/checkpoints` holds random ImageNet-shaped weights for each of `IMAGENET_ARCHS`."
    import torch, torchvision
    home = tmp_path_factory.mktemp('torch_home')
    ckpt = home/'hub'/'checkpoints'
    ckpt.mkdir(parents=True)
    with torch.random.fork_rng():          # the caller's random state is left as it was
        torch.manual_seed(20)
        for arch in IMAGENET_ARCHS:
            torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), ckpt/imagenet_checkpoint(arch))
    yield home
    shutil.rmtree(home, ignore_errors=True)   # about 230 MB: not kept with pytest's last temporary folders

@pytest.fixture(scope='session')
def standin_fastai_home(tmp_path_factory):
    "A private `FASTAI_HOME` whose `models/wt103-fwd` holds a random full-size `AWD_LSTM` language model and small vocabulary."
    import pickle, warnings, torch
    from fastai.text.all import get_language_model, AWD_LSTM, awd_lstm_lm_config
    home = tmp_path_factory.mktemp('fastai_home')
    folder = home/'models'/'wt103-fwd'
    folder.mkdir(parents=True)
    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.simplefilter('ignore')    # torch.jit.script's deprecation, from fastai's AWD_LSTM
        torch.manual_seed(103)
        model = get_language_model(AWD_LSTM, len(WT103_VOCAB), config=awd_lstm_lm_config)
        torch.save(model.state_dict(), folder/WT103_FILES[0])
    (folder/WT103_FILES[1]).write_bytes(pickle.dumps(WT103_VOCAB))
    yield home
    shutil.rmtree(home, ignore_errors=True)   # about 80 MB

@contextlib.contextmanager
def standin_weights(torch_home, fastai_home):
    """Point torch and fastai at the stand-in weights, and the course's reachability check at "offline", until the block ends.
    The weights are random: what runs with them tests the code of the pretrained path (loading, freezing, rates,
    normalisation), never the accuracy that real ImageNet or WikiText-103 weights would give."""
    import sys
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

@pytest.fixture
def pretrained_weights(standin_torch_home, standin_fastai_home):
    """Random stand-ins for ImageNet and WikiText-103 weights under the exact names torchvision and fastai load, in a
    private `TORCH_HOME` and `FASTAI_HOME`, for this test only (other tests still find no weights). Random weights
    test code, never accuracy."""
    with standin_weights(standin_torch_home, standin_fastai_home) as homes: yield homes
