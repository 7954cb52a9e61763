"""Shared fixtures (what the tests share besides fixtures is in helpers.py). Each small model is trained once per test
session, in this process, and reused by every test file (the CLI tests, the serve tests): `pets_model`, `pascal_model`,
`biwi_model`, `imdb_model` are the paths of their model.pkl. `data_cut` makes a cut of any dataset (tools/cut_data.py);
`browser` is headless Chromium, skipped with one line when it is missing (required under CI=true)."""
import shutil
from collections import Counter
import pytest
from helpers import (IMDB_SMALL, run_cli, train, train_small, cut, breeds_of_each, IMAGENET_ARCHS, WT103_FILES, WT103_VOCAB,
                     imagenet_checkpoint, standin_weights, find_chromium, launch_chromium, INSTALL_CHROMIUM)

@pytest.fixture(scope='session')
def cli():
    "`run_cli`: the command line, called in-process."
    return run_cli

# --- cuts of the datasets ---

@pytest.fixture(scope='session')
def data_cut(tmp_path_factory):
    """`data_cut(name, n=None, **sizes)`: a fresh copy of dataset `name` in its layout, cut by tools/cut_data.py
    (`n` items: pets per breed, PASCAL or IMDB rows, BIWI frames per person, Planet chips, CamVid images; None: all).
    Each call makes a new folder, which the test may change."""
    def make(name, n=None, **sizes): return cut(name, tmp_path_factory.mktemp('data'), n, **sizes)
    return make

@pytest.fixture(scope='session')
def pets_small(data_cut):
    "Whole breeds of pets, a cat's and a dog's first (cats' names are capitalised), then more until there are 20 images."
    from visioncourse.data import dataset_path
    counts = Counter(breeds_of_each(sorted((dataset_path('pets')/'images').glob('*.jpg'))))
    cats, dogs = [b for b in counts if b[0].isupper()], [b for b in counts if not b[0].isupper()]
    order = [b for pair in zip(cats, dogs) for b in pair] + cats[len(dogs):] + dogs[len(cats):]
    keep = order[:2]
    while sum(counts[b] for b in keep) < 20 and len(keep) < len(order): keep.append(order[len(keep)])
    return data_cut('pets', breeds=keep)

@pytest.fixture(scope='session')
def imdb_small(data_cut):
    "60 sample reviews, in the sample's split proportions, each cut to its first 40 words."
    return data_cut('imdb_sample', 60, words=40)

@pytest.fixture(scope='session')
def photos():
    "The first 8 pet photos of the dataset in use: what the serve tests upload."
    from visioncourse.data import dataset_path
    return sorted((dataset_path('pets')/'images').glob('*.jpg'))[:8]

# --- small models, trained once per session ---


@pytest.fixture(scope='session')
def pets_run(tmp_path_factory, pets_small): return train_small(tmp_path_factory, 'pets', '--data', pets_small)

@pytest.fixture(scope='session')
def pascal_run(tmp_path_factory): return train_small(tmp_path_factory, 'pascal')

@pytest.fixture(scope='session')
def biwi_run(tmp_path_factory): return train_small(tmp_path_factory, 'biwi')

@pytest.fixture(scope='session')
def imdb_run(tmp_path_factory, imdb_small):
    "`visioncourse train imdb` (ULMFiT) at `IMDB_SMALL` on `imdb_small`'s 60 reviews: its `out` folder and log."
    return train(tmp_path_factory.mktemp('imdb_run')/'imdb', 'imdb', *IMDB_SMALL, '--data', imdb_small)

@pytest.fixture(scope='session')
def imdb_model(imdb_run): return imdb_run.out/'model.pkl'

@pytest.fixture(scope='session')
def pets_model(pets_run): return pets_run.out/'model.pkl'

@pytest.fixture(scope='session')
def pascal_model(pascal_run): return pascal_run.out/'model.pkl'

@pytest.fixture(scope='session')
def biwi_model(biwi_run): return biwi_run.out/'model.pkl'

# --- the real browser: found, or skipped with one line (required under CI=true) ---

def _ci():
    from visioncourse.settings import env_flag
    return bool(env_flag('CI'))

NO_CHROMIUM = f"no Chromium found for the browser tests; install it: {INSTALL_CHROMIUM}"

def pytest_collection_modifyitems(config, items):
    "Without Chromium, and not under CI, the tests that need the browser are skipped (one line at the end says so)."
    needs = [i for i in items if 'browser' in getattr(i, 'fixturenames', ())]
    for i in needs: i.add_marker(pytest.mark.browser)
    config._browser_skipped = 0
    if needs and not _ci() and find_chromium() is None:
        for i in needs: i.add_marker(pytest.mark.skip(reason=NO_CHROMIUM))
        config._browser_skipped = len(needs)

def pytest_terminal_summary(terminalreporter, config):
    if getattr(config, '_browser_skipped', 0):
        terminalreporter.write_line(f"{config._browser_skipped} browser tests skipped: {NO_CHROMIUM}", yellow=True)

@pytest.fixture(scope='session')
def chromium():
    "The Chromium binary the browser tests drive (helpers.find_chromium); a clear failure under CI=true if there is none."
    path = find_chromium()
    if path is None: pytest.fail(f"CI=true: the browser tests are required, and {NO_CHROMIUM}", pytrace=False)
    return path

@pytest.fixture(scope='session')
def browser(chromium):
    "Headless Chromium driven by Playwright, one for the session."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = launch_chromium(p, chromium)
        yield b
        b.close()

# --- stand-in pretrained weights: the code path of an online learner, offline ---

def standin_home(tmp_path_factory, name, sub, seed, write):
    """A private home folder `name` whose folder `sub` holds what `write(folder)` writes, under torch seed `seed` (the
    caller's random state is left as it was); removed at the end of the session, not kept with pytest's last folders."""
    import torch
    home = tmp_path_factory.mktemp(name)
    (home/sub).mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        write(home/sub)
    yield home
    shutil.rmtree(home, ignore_errors=True)

@pytest.fixture(scope='session')
def standin_torch_home(tmp_path_factory):
    "A private `TORCH_HOME` whose `hub/checkpoints` holds random ImageNet-shaped weights for each of `IMAGENET_ARCHS` (about 230 MB)."
    import torch, torchvision
    def write(ckpt):
        for arch in IMAGENET_ARCHS:
            torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), ckpt/imagenet_checkpoint(arch))
    yield from standin_home(tmp_path_factory, 'torch_home', 'hub/checkpoints', 20, write)

@pytest.fixture(scope='session')
def standin_fastai_home(tmp_path_factory):
    "A private `FASTAI_HOME` whose `models/wt103-fwd` holds a random full-size `AWD_LSTM` language model and small vocabulary (about 80 MB)."
    import pickle, warnings, torch
    from fastai.text.all import get_language_model, AWD_LSTM, awd_lstm_lm_config
    def write(folder):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')    # torch.jit.script's deprecation, from fastai's AWD_LSTM
            model = get_language_model(AWD_LSTM, len(WT103_VOCAB), config=awd_lstm_lm_config)
        torch.save(model.state_dict(), folder/WT103_FILES[0])
        (folder/WT103_FILES[1]).write_bytes(pickle.dumps(WT103_VOCAB))
    yield from standin_home(tmp_path_factory, 'fastai_home', 'models/wt103-fwd', 103, write)

@pytest.fixture
def pretrained_weights(standin_torch_home, standin_fastai_home):
    """Random stand-ins for ImageNet and WikiText-103 weights under the exact names torchvision and fastai load, in a
    private `TORCH_HOME` and `FASTAI_HOME`, for this test only (other tests still find no weights). Random weights
    test code, never accuracy."""
    with standin_weights(standin_torch_home, standin_fastai_home) as homes: yield homes
