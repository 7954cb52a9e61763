"""The IMDB (ULMFiT) problem: reading both dataset layouts, bad input, the weights fallback, and a tiny full run."""
import warnings
from pathlib import Path
import pandas as pd
import pytest

warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
from visioncourse import imdb
from visioncourse.imdb import ImdbProblem, imdb_df, imdb_files, read_texts_csv, course_text_learner, awd_config, LABELS
from visioncourse.data import dataset_path
from visioncourse.problems import get_problem


@pytest.fixture(scope='module')
def sample():
    return dataset_path('imdb_sample')


@pytest.fixture(scope='module')
def full(sample):
    return pd.read_csv(sample/'texts.csv')


def write_csv(folder, df):
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder/'texts.csv', index=False)
    return folder


def fake_imdb(root, unsup=True):
    "A tiny dataset in fastai's full IMDB layout: 2 training and 1 test review per class, 2 unlabelled."
    for split, n in [('train', 2), ('test', 1)]:
        for lbl in ('neg', 'pos'):
            (root/split/lbl).mkdir(parents=True)
            for i in range(n): (root/split/lbl/f'{i}_7.txt').write_text(f'A {lbl} review number {i}.')
    if unsup:
        (root/'unsup').mkdir()
        for i in range(2): (root/'unsup'/f'{i}_0.txt').write_text(f'An unlabelled review {i}.')
    return root


def test_registry():
    p = get_problem('imdb')
    assert isinstance(p, ImdbProblem)
    assert (p.name, p.dataset, p.arch, p.inputs) == ('imdb', 'imdb_sample', 'AWD_LSTM', 'text')


def test_sample(sample, full):
    df = imdb_df(sample)
    assert len(df) == len(full) and df.is_valid.sum() == full.is_valid.sum()
    assert set(df.label) == set(LABELS)
    assert df.text[0].startswith('Un-bleeping-believable!')     # the sample's first review (README.txt)
    p = ImdbProblem()
    assert p.files(sample) == [sample/'texts.csv'] == p.check(sample)
    n_valid = int(full.is_valid.sum())
    assert p.count(sample) == f'{len(full)} reviews ({len(full) - n_valid} train, {n_valid} valid)'


def test_full_layout(tmp_path):
    root = fake_imdb(tmp_path/'imdb')
    df = imdb_df(root)
    assert list(df.columns) == ['label', 'text', 'is_valid']
    assert len(df) == 6 and df.is_valid.sum() == 2
    assert df.label.tolist() == ['negative', 'negative', 'positive', 'positive', 'negative', 'positive']
    assert len(imdb_df(root, unsup=True)) == 8
    assert len(imdb_files(root)) == 8
    assert ImdbProblem().count(root) == '6 reviews (4 train, 2 valid), 2 unlabelled'
    # the original aclImdb archive keeps the unlabelled reviews in train/unsup
    (root/'unsup').rename(root/'train'/'unsup')
    assert len(imdb_df(root, unsup=True)) == 8


@pytest.mark.parametrize('change, message', [
    (lambda df: df.drop(columns='text'), 'missing column(s) text'),
    (lambda df: df.drop(columns=['label', 'is_valid']), 'missing column(s) label, is_valid'),
    (lambda df: df.assign(text=df.text.where(df.index != 5, '')), 'row 6 has an empty text'),
    (lambda df: df.assign(label=df.label.where(df.index != 0, 'neutral')), "row 1 has label 'neutral'"),
    (lambda df: df.assign(is_valid=df.is_valid.astype(object).where(df.index != 2, 'maybe')), "row 3 has is_valid 'maybe'"),
    (lambda df: df[df.is_valid], 'no training reviews'),
])
def test_bad_csv(tmp_path, full, change, message):
    folder = write_csv(tmp_path/'data', change(full.copy()))
    before = (folder/'texts.csv').read_bytes()
    with pytest.raises(ValueError) as e: ImdbProblem().check(folder)
    msg = str(e.value)
    assert str(folder/'texts.csv') in msg and message in msg and '\n' not in msg
    assert (folder/'texts.csv').read_bytes() == before          # nothing the user had is changed


def test_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match='texts.csv: file not found'): imdb_df(tmp_path)


def test_bad_review_file(tmp_path):
    root = fake_imdb(tmp_path/'imdb')
    (root/'test'/'pos'/'0_7.txt').write_text('\n  \n')
    with pytest.raises(ValueError, match=r'0_7.txt: empty text'): ImdbProblem().check(root)
    (root/'test'/'pos'/'0_7.txt').write_bytes(b'\xff\xfe bad')
    with pytest.raises(ValueError, match=r'0_7.txt: not UTF-8 text'): imdb_df(root)


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
    assert learn.model[0].encoder.weight.shape[1] == 400


def test_weights_reduced(tiny_dls, capsys):
    course_text_learner(tiny_dls, config=awd_config(dict(emb_sz=16, n_hid=32, n_layers=2)))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and 'fit only the full-size AWD_LSTM' in out[0] and 'emb_sz=16, n_hid=32, n_layers=2' in out[0]


def test_fit_predict_export(tmp_path, full):
    "The command line's path: fit on a small copy of the sample, plots, predict, export and load."
    from fastai.learner import load_learner
    small = full.groupby('is_valid', group_keys=False).head(24)
    data = write_csv(tmp_path/'data', small)
    p = ImdbProblem()
    learn = p.fit(data, epochs=1, bs=8, lr=None, pretrained=True, seed=0, size=16, work=tmp_path/'work', quick=True)
    assert (tmp_path/'work'/'models'/'finetuned.pth').is_file()
    assert list(learn.dls.vocab[1]) == ['negative', 'positive']
    extra = p.plots(learn, tmp_path)
    assert (tmp_path/'confusion_matrix.png').is_file()
    assert sum(map(sum, extra['confusion_matrix'])) == 24 and extra['lm_perplexity'] > 1
    learn.export(tmp_path/'imdb.pkl')
    learn2 = load_learner(tmp_path/'imdb.pkl')
    pred = p.predict(learn2, 'I really liked that movie!')
    assert pred['label'] in LABELS and set(pred['probs']) == set(LABELS)
    assert abs(sum(pred['probs'].values()) - 1) < 1e-5 and pred['probability'] == pred['probs'][pred['label']]
    line = p.describe('word ' * 40, pred)
    assert line.startswith("'word word") and '...' in line and pred['label'] in line and len(line) < 110
    with pytest.raises(ValueError, match='empty'): p.predict(learn2, '   ')
