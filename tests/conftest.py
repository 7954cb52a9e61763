"""Shared fixtures. Each small model is trained once per test session, in this process, and reused by every test
file (the CLI tests, the serve tests): `pets_model`, `pascal_model`, `biwi_model` are the paths of their model.pkl."""
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
def pets_model(pets_run): return pets_run.out/'model.pkl'

@pytest.fixture(scope='session')
def pascal_model(pascal_run): return pascal_run.out/'model.pkl'

@pytest.fixture(scope='session')
def biwi_model(biwi_run): return biwi_run.out/'model.pkl'
