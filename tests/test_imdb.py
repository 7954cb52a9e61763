"""The IMDB (ULMFiT) problem as a package: the registry, bad input on disk left untouched, the weights fallback
(offline, patched), the full layout as tools/imdb_full_layout.py writes it (unlabelled reviews for the language model
only), and a tiny full run through `ImdbProblem.fit`, export and load. Reading both layouts and every error message
are checked in nbs/07_imdb.ipynb's appendix."""
import subprocess, sys, warnings
from pathlib import Path
import pandas as pd
import pytest

warnings.filterwarnings('ignore', message='.*torch.jit.script.*')   # fastai/layers.py's @script at import
from visioncourse import imdb
from visioncourse.imdb import ImdbProblem, course_text_learner, awd_config, LABELS
from visioncourse.data import dataset_path
from visioncourse.problems import get_problem
from visioncourse.training import RunConfig

TOOL = Path(__file__).resolve().parents[1]/'tools'/'imdb_full_layout.py'


@pytest.fixture(scope='module')
def full():
    return pd.read_csv(dataset_path('imdb_sample')/'texts.csv')


def write_csv(folder, df):
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder/'texts.csv', index=False)
    return folder


def test_registry():
    p = get_problem('imdb')
    assert isinstance(p, ImdbProblem)
    assert (p.name, p.dataset, p.arch, p.inputs) == ('imdb', 'imdb_sample', 'AWD_LSTM', 'text')


def _bad_label(root, full):
    write_csv(root, full.assign(label=full.label.where(full.index != 0, 'neutral')))
    return root/'texts.csv', "row 1 has label 'neutral'"

def _missing_folder(root, full):
    for d in ('train/neg', 'train/pos', 'test/neg'):
        (root/d).mkdir(parents=True)
        (root/d/'0_7.txt').write_text('A review.')
    return root/'test'/'pos', 'folder not found'

def _not_utf8(root, full):
    _missing_folder(root, full)
    (root/'test'/'pos').mkdir()
    (root/'test'/'pos'/'0_7.txt').write_bytes(b'\xff\xfe bad')
    return root/'test'/'pos'/'0_7.txt', 'not UTF-8 text'

@pytest.mark.parametrize('make', [_bad_label, _missing_folder, _not_utf8])
def test_check_names_the_problem_and_changes_nothing(tmp_path, full, make):
    "`check` (before any training) fails in one line naming the file or folder, and leaves every file as it was."
    root = tmp_path/'data'; root.mkdir()
    where, message = make(root, full)
    before = {f: f.read_bytes() for f in root.rglob('*') if f.is_file()}
    with pytest.raises((ValueError, FileNotFoundError)) as e: ImdbProblem().check(root)
    msg = str(e.value)
    assert msg.startswith(str(where)) and message in msg and '\n' not in msg
    assert {f: f.read_bytes() for f in root.rglob('*') if f.is_file()} == before


def test_full_layout(tmp_path, full):
    "tools/imdb_full_layout.py writes the aclImdb layout; the classifier reads its labelled reviews, the language model all."
    small = full.groupby(['is_valid', 'label'], group_keys=False).head(4)   # every folder of the layout gets reviews
    src = write_csv(tmp_path/'src', small)/'texts.csv'
    dest = tmp_path/'imdb'
    run = lambda: subprocess.run([sys.executable, TOOL, dest, '--csv', src, '--unsup', '3'],
                                 capture_output=True, text=True)
    assert run().returncode == 0
    n = lambda d: len(list((dest/d).glob('*.txt')))
    for split, valid in [('train', False), ('test', True)]:
        for folder, label in [('neg', 'negative'), ('pos', 'positive')]:
            assert n(f'{split}/{folder}') == ((small.is_valid == valid) & (small.label == label)).sum()
    assert n('unsup') == 3
    before = {f: f.read_bytes() for f in dest.rglob('*') if f.is_file()}
    again = run()                                   # a folder that is not empty is refused, and left as it was
    assert again.returncode != 0 and again.stderr.strip().endswith('not empty; choose a new folder (nothing was written)')
    assert {f: f.read_bytes() for f in dest.rglob('*') if f.is_file()} == before
    df = imdb.imdb_df(dest, unsup=True)
    assert (len(df), df.label.isna().sum(), df.is_valid.sum()) == (len(small) + 3, 3, small.is_valid.sum())
    assert not df[df.label.isna()].is_valid.any()
    assert sorted(df.text[df.label.notna()]) == sorted(small.text)
    dls_lm = imdb.imdb_lm_dls(df, bptt=16, bs=4, max_vocab=200)
    assert len(dls_lm.train_ds) + len(dls_lm.valid_ds) == len(small) + 3
    dls = imdb.imdb_clas_dls(df, vocab=dls_lm.vocab, bptt=16, bs=4)
    assert (len(dls.train_ds), len(dls.valid_ds)) == ((~small.is_valid).sum(), small.is_valid.sum())
    assert list(dls.vocab[1]) == list(LABELS)
    x, y = dls.one_batch()                         # no 'nan' class: the batch decodes
    assert set(y.tolist()) <= {0, 1}


def test_lm_epochs_option():
    "`visioncourse train imdb --lm_epochs N` reaches `run.opts`; a bad value is one line."
    from visioncourse.cli import problem_options
    assert problem_options('imdb', ['--lm_epochs', '10']) == {'lm_epochs': '10'}
    assert imdb.lm_epochs(RunConfig(problem='imdb', path=Path('.'), epochs=2, opts={'lm_epochs': '10'})) == 10
    assert imdb.lm_epochs(RunConfig(problem='imdb', path=Path('.'), epochs=2)) == 2
    for bad in ('0', 'ten', '2.5'):
        with pytest.raises(ValueError, match=f"lm_epochs='{bad}'"): imdb.lm_epochs(RunConfig(problem='imdb', path=Path('.'), opts={'lm_epochs': bad}))


@pytest.fixture(scope='module')
def tiny_dls(full):
    small = full.groupby('is_valid', group_keys=False).head(8)
    return imdb.imdb_lm_dls(small, bptt=16, bs=4, max_vocab=200)


def test_weights_offline(tiny_dls, monkeypatch, capsys):
    monkeypatch.setattr(imdb, 'can_reach', lambda url, timeout=3.0: False)
    monkeypatch.setattr(imdb, 'wt103_cached', lambda: False)
    learn = course_text_learner(tiny_dls)          # the full-size AWD_LSTM, asked for pretrained weights
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ['visioncourse: the WikiText-103 weights are not cached and cannot be downloaded; '
                   'training from random weights (pretrained=False).']
    assert learn.model[0].encoder.weight.shape[1] == 400 and learn.pretrained is False


def test_weights_reduced(tiny_dls, capsys):
    learn = course_text_learner(tiny_dls, config=awd_config(dict(emb_sz=16, n_hid=32, n_layers=2)))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and 'fit only the full-size AWD_LSTM' in out[0] and 'emb_sz=16, n_hid=32, n_layers=2' in out[0]
    assert learn.pretrained is False


def test_fit_predict_export(tmp_path, data_cut):
    "The command line's path: `fit` with a `RunConfig` on a cut of the sample (48 reviews), plots, export, load, predict."
    from fastai.learner import load_learner
    data = data_cut('imdb_sample', 48)
    n_valid = pd.read_csv(data/'texts.csv').is_valid.sum()
    p = ImdbProblem()
    with pytest.raises(ValueError, match='run.tmp'): p.fit(RunConfig(problem='imdb', path=data))
    from fastai.callback.core import Callback
    made, fits = [], []
    class Fits(Callback):
        def before_train(self): fits.append((len(made), self.learn.n_epoch, self.learn.epoch))   # model, step's epochs, epoch
    def setup(learner):
        made.append(learner)
        learner.add_cb(Fits())
    run = RunConfig(problem='imdb', path=data, tmp=tmp_path/'work', epochs=1, size=16, bs=8, seed=0, workers=0, quick=True,
                    opts={'lm_epochs': '2'})
    learn = p.fit(run, setup=setup)
    assert len(made) == 2 and made[1] is learn      # setup saw the language model, then the classifier
    assert fits == [(1, 1, 0), (1, 2, 0), (1, 2, 1), (2, 1, 0), (2, 1, 0), (2, 1, 0), (2, 1, 0)]   # LM: 1 + lm_epochs; classifier: 1+1+1 + epochs
    assert (tmp_path/'work'/'models'/'fine_tuned_enc.pth').is_file()
    assert list(learn.dls.vocab[1]) == ['negative', 'positive']
    assert learn.ulmfit['bptt'] == 16 and learn.ulmfit['awd'] == imdb.QUICK['awd']
    extra = p.plots(learn, tmp_path)
    assert (tmp_path/'confusion_matrix.png').is_file()
    assert sum(map(sum, extra['confusion_matrix'])) == n_valid and extra['lm_perplexity'] > 1
    learn.export(tmp_path/'imdb.pkl')
    learn2 = load_learner(tmp_path/'imdb.pkl')
    out = tmp_path/'out'; out.mkdir()
    pred = p.predict(learn2, 'I really liked that movie!', out=out)
    assert not any(out.iterdir())                   # a text prediction writes nothing
    assert pred['label'] in LABELS and set(pred['probs']) == set(LABELS)
    assert abs(sum(pred['probs'].values()) - 1) < 1e-5 and pred['probability'] == pred['probs'][pred['label']]
    line = p.describe('word ' * 40, pred)
    assert line.startswith("'word word") and '...' in line and pred['label'] in line and len(line) < 110
    assert p.describe(Path('review.txt'), pred).startswith('review.txt: ')
    with pytest.raises(ValueError, match='empty'): p.predict(learn2, '   ')
