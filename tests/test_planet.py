"Tests of the installed `visioncourse.planet`: tags, F2 against hand-worked values and scikit-learn, bad input, the problem."
import pickle, shutil, warnings
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pandas as pd, pytest, torch
from sklearn.metrics import fbeta_score
from fastai.torch_core import to_detach
from visioncourse.data import dataset_path
from visioncourse.planet import (planet_tags, planet_get_x, planet_vocab, planet_dls, fbeta_samples, planet_metrics,
    fbeta_sweep, best_fbeta_threshold, check_labels_csv, problem, PlanetProblem)

PLANET = dataset_path('planet_sample')

@pytest.fixture(scope='module')
def df(): return pd.read_csv(PLANET/'labels.csv')

def small_copy(tmp, df, n=12, edit=None):
    "A dataset root in `tmp` with the first `n` chips, their rows of labels.csv changed by `edit`."
    rows = df.head(n)
    (tmp/'train').mkdir(parents=True)
    for name in rows.image_name: shutil.copy(PLANET/'train'/f'{name}.jpg', tmp/'train')
    (edit(rows.copy()) if edit else rows).to_csv(tmp/'labels.csv', index=False)
    return tmp

def metric_value(metric, acts, targs):
    "A fastai metric's value on one batch, as during validation (activation and threshold applied)."
    metric.reset(); metric.accumulate(SimpleNamespace(pred=acts, y=targs, to_detach=to_detach))
    return metric.value

# --- data

def test_tags_and_vocab(df):
    assert planet_tags(pd.Series({'image_name': 'a', 'tags': 'clear primary'})) == ['clear', 'primary']
    with pytest.raises(ValueError, match="no tags for 'a'"): planet_tags(pd.Series({'image_name': 'a', 'tags': float('nan')}))
    vocab = planet_vocab(df)
    assert len(vocab) == 17 and vocab == sorted(vocab) and 'artisinal_mine' in vocab

def test_get_x_pickles(df):
    get_x = pickle.loads(pickle.dumps(planet_get_x(PLANET)))
    assert get_x(df.iloc[0]) == PLANET/'train'/f'{df.image_name[0]}.jpg'

def test_dls_subset_split_and_rgb(df):
    dls = planet_dls(PLANET, size=32, bs=8, n_items=40, num_workers=0)
    assert (len(dls.train_ds), len(dls.valid_ds)) == (32, 8)
    assert list(dls.vocab) == planet_vocab(df)      # the whole file's tags, even if the subset lacks some
    xb, yb = dls.one_batch()
    assert xb.shape == (8, 3, 32, 32) and yb.shape == (8, 17)
    again = planet_dls(PLANET, size=32, bs=8, n_items=40, num_workers=0)
    assert list(again.valid_ds.items.image_name) == list(dls.valid_ds.items.image_name)   # seeded

# --- metrics

ACTS = torch.tensor([[9., -9., 9., -9.], [9., -9., -9., -9.]])
TARGS = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
HAND = (0.5 + 5/13)/2   # chip 1: P=R=1/2 -> F2=0.5; chip 2: P=1, R=1/3 -> F2=5/13

def test_fbeta_hand_worked_and_sklearn():
    assert metric_value(fbeta_samples(), ACTS, TARGS) == pytest.approx(HAND)
    assert fbeta_score(TARGS, ACTS > 0, beta=2, average='samples') == pytest.approx(HAND)
    assert metric_value(fbeta_samples(), torch.full((1, 4), -9.), torch.tensor([[1, 0, 0, 0]])) == 0

def test_fbeta_matches_fastai_fbetamulti():
    from fastai.metrics import FBetaMulti
    torch.manual_seed(0)
    acts, targs = torch.randn(20, 17), (torch.rand(20, 17) > 0.7).long()
    targs[:, 0] = 1
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = metric_value(FBetaMulti(2, thresh=0.2, average='samples'), acts, targs)
    assert metric_value(fbeta_samples(), acts, targs) == pytest.approx(ref)

def test_metrics_pickle_and_names():
    ms = pickle.loads(pickle.dumps(planet_metrics(0.3)))
    assert ms[0].keywords == {'thresh': 0.3} and ms[1].name == 'fbeta_score'

def test_fbeta_sweep_hand_worked():
    p = torch.sigmoid(ACTS/3)                    # 0.95 / 0.05
    _, f = fbeta_sweep(p, TARGS, [0.5, 0.99, 0.01])
    assert f.tolist() == pytest.approx([HAND, 0., (5/6 + 15/16)/2])
    assert best_fbeta_threshold(p, TARGS, [0.5, 0.99, 0.01]) == pytest.approx((0.01, (5/6 + 15/16)/2))

# --- bad input: one line naming the file

def test_check_labels_csv_ok(df, tmp_path):
    assert len(check_labels_csv(small_copy(tmp_path, df, 3))) == 3

def test_labels_csv_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match='labels.csv: file not found'): check_labels_csv(tmp_path)

def test_labels_csv_wrong_columns(df, tmp_path):
    root = small_copy(tmp_path, df, 3, lambda d: d.rename(columns={'tags': 'labels'}))
    with pytest.raises(ValueError, match=r'labels.csv: missing column\(s\) tags'): check_labels_csv(root)

def test_labels_csv_empty_tags(df, tmp_path):
    root = small_copy(tmp_path, df, 3, lambda d: d.assign(tags=['clear', '', 'haze']))
    with pytest.raises(ValueError, match=f'empty tags for {df.image_name[1]}'): check_labels_csv(root)

def test_listed_image_missing(df, tmp_path):
    root = small_copy(tmp_path, df, 3)
    (root/'train'/f'{df.image_name[2]}.jpg').unlink()
    with pytest.raises(FileNotFoundError, match=rf'1 listed image\(s\) not found .*{df.image_name[2]}.jpg'):
        problem.check(root)

def test_check_decodes_every_image(df, tmp_path):
    root = small_copy(tmp_path, df, 3)
    assert len(problem.check(root)) == 4
    bad = root/'train'/f'{df.image_name[0]}.jpg'
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(ValueError, match=f'{df.image_name[0]}.jpg: image does not decode'): problem.check(root)

# --- the command-line problem

def test_problem_attributes():
    assert isinstance(problem, PlanetProblem)
    assert (problem.name, problem.dataset, problem.arch, problem.size) == ('planet', 'planet_sample', 'resnet34', 128)
    assert problem.count(PLANET) == '1000 chips in labels.csv'
    assert problem.describe('x.jpg', dict(labels=['clear', 'primary'], threshold=0.2)) == 'x.jpg: clear primary (threshold 0.20)'
    assert 'no tag above the threshold' in problem.describe('x.jpg', dict(labels=[], threshold=0.2))

def test_problem_learner_predict_plots(df, tmp_path):
    import json
    root = small_copy(tmp_path/'data', df, 10)
    dls = problem.dls(root, size=32, bs=4, num_workers=0)
    learn = problem.learner(dls, 'resnet18', pretrained=False)
    learn.path = tmp_path
    assert learn.loss_func.thresh == 0.2 and [m.name for m in learn.metrics] == ['accuracy_multi', 'fbeta_score']
    fn = root/'train'/f'{df.image_name[0]}.jpg'
    with learn.no_bar(): pred = problem.predict(learn, fn)
    json.dumps(pred)
    assert pred['threshold'] == 0.2 and sorted(pred['probs']) == sorted(dls.vocab)
    assert pred['labels'] == [t for t, p in pred['probs'].items() if p > 0.2]
    with learn.no_bar(): extra = problem.plots(learn, tmp_path)
    assert (tmp_path/'threshold_sweep.png').is_file()
    assert extra['threshold'] == 0.2 and 0 <= extra['fbeta'] <= 1 and 0 <= extra['best_fbeta'] <= 1
