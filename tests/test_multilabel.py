"Tests of the installed `visioncourse.multilabel`: data checks, loss and metrics against the libraries, threshold export."
import pickle, shutil, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
import fastai.metrics
from fastai.torch_core import TensorImage, TensorMultiCategory
from visioncourse.data import dataset_path
from visioncourse.multilabel import (get_y, get_x_for, splitter, pascal_vocab, check_train_csv, pascal_block, pascal_dls,
    binary_cross_entropy, accuracy_multi, best_threshold, mean_average_precision, per_class_thresholds,
    predict_with_thresholds, accuracy_multi_per_class, set_threshold)

PASCAL = dataset_path('pascal_2007')

@pytest.fixture(scope='module')
def df(): return pd.read_csv(PASCAL/'train.csv')

def small_copy(tmp, df, n_train=4, n_valid=3):
    "A dataset root in `tmp` with the first few training and validation rows of the sample and their images."
    rows = pd.concat([df[~df.is_valid].head(n_train), df[df.is_valid].head(n_valid)])
    (tmp/'train').mkdir(parents=True)
    for f in rows.fname: shutil.copy(PASCAL/'train'/f, tmp/'train'/f)
    rows.to_csv(tmp/'train.csv', index=False)
    return tmp, rows

# --- data

def test_splitter_and_vocab_on_sample(df):
    train, valid = splitter(df)
    assert (len(train), len(valid)) == (27, 37)
    assert all(isinstance(i, int) for i in train + valid)
    assert len(pascal_vocab(df)) == 20

def test_splitter_uses_positions_not_index(df):
    assert splitter(df.set_index('fname')) == splitter(df)

def test_get_x_get_y(df, tmp_path):
    row = df.iloc[0]
    assert get_y(row) == row['labels'].split(' ')
    get_x = pickle.loads(pickle.dumps(get_x_for(tmp_path)))
    assert get_x(row) == tmp_path/'train'/row['fname']
    with pytest.raises(ValueError, match="'a.jpg' has no labels"): get_y(pd.Series({'fname': 'a.jpg', 'labels': np.nan}))

def test_pascal_dls_on_sample():
    dls = pascal_dls(PASCAL, size=32, bs=8, num_workers=0)
    assert len(dls.vocab) == 20 and (len(dls.train_ds), len(dls.valid_ds)) == (27, 37)
    xb, yb = dls.one_batch()
    assert xb.shape == (8, 3, 32, 32) and yb.shape == (8, 20)

def test_pascal_block_reads_vocab(tmp_path, df):
    path, rows = small_copy(tmp_path, df)
    assert list(pascal_block(path, size=32).datasets(rows).vocab) == pascal_vocab(rows)

def test_batch_size_larger_than_training_set_is_lowered(tmp_path, df):
    path, _ = small_copy(tmp_path, df)
    with pytest.warns(UserWarning, match='batch size lowered from 64 to 4'):
        dls = pascal_dls(path, size=32, num_workers=0)
    assert dls.train.bs == 4 and len(dls.train) == 1

# --- malformed train.csv

def test_missing_column(tmp_path, df):
    path, rows = small_copy(tmp_path, df)
    rows.drop(columns='labels').to_csv(path/'train.csv', index=False)
    with pytest.raises(ValueError, match=r'train\.csv: missing column\(s\) labels'): pascal_dls(path)

def test_empty_labels(tmp_path, df):
    path, rows = small_copy(tmp_path, df)
    bad = rows.fname.iloc[1]
    rows.assign(labels=rows['labels'].where(rows.fname != bad, '')).to_csv(path/'train.csv', index=False)
    with pytest.raises(ValueError, match=f'train.csv: empty labels for {bad}'): pascal_dls(path)

def test_listed_file_missing(tmp_path, df):
    path, rows = small_copy(tmp_path, df)
    gone = rows.fname.iloc[2]
    (path/'train'/gone).unlink()
    with pytest.raises(FileNotFoundError, match=f'train.csv: 1 listed image.*not found.*{gone}'): pascal_dls(path)

def test_no_csv_unreadable_csv_and_bad_is_valid(tmp_path, df):
    with pytest.raises(FileNotFoundError, match='train.csv: file not found'): check_train_csv(tmp_path)
    path, rows = small_copy(tmp_path/'a', df)
    (path/'train.csv').write_text('')
    with pytest.raises(ValueError, match='cannot be read as CSV'): check_train_csv(path)
    rows.assign(is_valid='maybe').to_csv(path/'train.csv', index=False)
    with pytest.raises(ValueError, match='is_valid must hold True/False'): check_train_csv(path)
    rows.assign(is_valid=True).to_csv(path/'train.csv', index=False)
    with pytest.raises(ValueError, match='no training rows'): check_train_csv(path)

# --- loss and metrics

@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(16, 20), (torch.rand(16, 20) > 0.8).float()

@pytest.mark.parametrize('scale', [1., 4., 60.])
def test_bce_matches_pytorch(batch, scale):
    acts, targs = batch
    torch.testing.assert_close(binary_cross_entropy(acts*scale, targs), F.binary_cross_entropy_with_logits(acts*scale, targs))

def test_bce_on_fastai_subclasses_gives_plain_tensor(batch):
    acts, targs = batch
    loss = binary_cross_entropy(TensorImage(acts.clone().requires_grad_()), TensorMultiCategory(targs))
    assert type(loss) is torch.Tensor and loss.requires_grad
    torch.testing.assert_close(loss.detach(), F.binary_cross_entropy_with_logits(acts, targs))

@pytest.mark.parametrize('thresh', [0.1, 0.2, 0.5, 0.9])
@pytest.mark.parametrize('sigmoid', [True, False])
def test_accuracy_multi_matches_fastai(batch, thresh, sigmoid):
    acts, targs = batch
    inp = acts if sigmoid else acts.sigmoid()
    mine = accuracy_multi(TensorImage(inp), TensorMultiCategory(targs), thresh, sigmoid)
    assert type(mine) is torch.Tensor
    torch.testing.assert_close(mine, fastai.metrics.accuracy_multi(inp, targs, thresh, sigmoid))

def test_best_threshold_is_grid_argmax(batch):
    acts, targs = batch
    preds = acts.sigmoid()
    grid = torch.linspace(0.05, 0.95, 29)
    accs = torch.stack([accuracy_multi(preds, targs, t, sigmoid=False) for t in grid])
    thresh, acc = best_threshold(preds, targs)
    assert isinstance(thresh, float) and isinstance(acc, float)
    assert thresh == grid[accs.argmax()].item() and acc == accs.max().item()

def test_best_threshold_known_answer_and_ties():
    p = torch.tensor([[0.6, 0.3], [0.3, 0.6], [0.3, 0.3]]); t = torch.tensor([[1, 0], [0, 1], [0, 0]])
    assert best_threshold(p, t, [0.1, 0.3, 0.5, 0.7]) == pytest.approx((0.3, 1.0))
    assert best_threshold(p, t, [0.5, 0.4]) == pytest.approx((0.5, 1.0))   # tie: the first

def test_mean_average_precision_matches_sklearn(batch):
    acts, targs = batch
    targs[:, 3] = 0                                  # an absent class is left out
    present = targs.sum(0) > 0
    expected = average_precision_score(targs[:, present].numpy(), acts[:, present].numpy(), average='macro')
    assert mean_average_precision(acts.sigmoid(), targs) == pytest.approx(expected)
    with pytest.raises(ValueError, match='no class has a positive'): mean_average_precision(acts, torch.zeros_like(targs))

def test_per_class_thresholds():
    p = torch.tensor([[0.40, 0.80, 0.1], [0.20, 0.60, 0.1], [0.35, 0.75, 0.1], [0.10, 0.65, 0.5]])
    t = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]])
    grid = [0.1, 0.3, 0.5, 0.7, 0.9]
    ct = per_class_thresholds(p, t, grid)
    assert ct.shape == (3,) and ct[:2].tolist() == pytest.approx([0.3, 0.7])
    assert ct[2].item() == pytest.approx(best_threshold(p, t, grid)[0])     # no positives: the global best
    assert torch.equal(predict_with_thresholds(p, ct), t.bool())
    assert accuracy_multi_per_class(p, t, ct).item() == 1.0

def test_per_class_at_least_as_good_as_single_on_same_set(batch):
    acts, targs = batch
    preds = acts.sigmoid()
    assert accuracy_multi_per_class(preds, targs, per_class_thresholds(preds, targs)) >= best_threshold(preds, targs)[1] - 1e-6

# --- threshold travels with the exported learner

@pytest.fixture(scope='module')
def learner(tmp_path_factory):
    from fastai.vision.all import resnet18
    from visioncourse.learner import course_learner
    path, _ = small_copy(tmp_path_factory.mktemp('pascal'), pd.read_csv(PASCAL/'train.csv'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = pascal_dls(path, size=32, bs=4, num_workers=0)
    return path, course_learner(dls, resnet18, pretrained=False, metrics=accuracy_multi)

def test_set_threshold_survives_export(learner, tmp_path):
    from fastai.learner import load_learner
    path, learn = learner
    set_threshold(learn, 0.3)
    learn.export(tmp_path/'m.pkl')
    loaded = load_learner(tmp_path/'m.pkl')
    assert loaded.loss_func.thresh == 0.3
    img = next((path/'train').iterdir())
    labels, decoded, probs = loaded.predict(img)
    assert torch.equal(decoded, probs > 0.3)
    assert list(labels) == [c for c, d in zip(loaded.dls.vocab, decoded) if d]

def test_per_class_threshold_export_loads_in_fresh_process(learner, tmp_path):
    path, learn = learner
    threshs = torch.linspace(0.2, 0.8, len(learn.dls.vocab))
    set_threshold(learn, threshs)
    learn.export(tmp_path/'m.pkl')
    code = ("import warnings; warnings.simplefilter('ignore'); import sys; from fastai.learner import load_learner; "
            "l = load_learner(sys.argv[1]); print(l.loss_func.thresh.tolist())")
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path/'m.pkl')], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert eval(out.stdout.strip().splitlines()[-1]) == pytest.approx(threshs.tolist())

def test_set_threshold_rejects_wrong_length_and_loss(learner):
    _, learn = learner
    with pytest.raises(ValueError, match='3 thresholds for'): set_threshold(learn, torch.full((3,), 0.5))
    class Fake: loss_func = torch.nn.MSELoss()
    with pytest.raises(ValueError, match='has no `thresh`'): set_threshold(Fake(), 0.5)
