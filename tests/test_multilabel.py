"Tests of the installed `visioncourse.multilabel`: data checks, loss and metrics against the libraries, threshold export."
import json, pickle, shutil, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
import torch.nn.functional as F
import fastai.metrics
from fastai.torch_core import TensorImage, TensorMultiCategory
from visioncourse.data import dataset_path
from visioncourse.multilabel import (get_y, get_x_for, splitter, label_vocab, check_train_csv, pascal_block, pascal_dls,
    binary_cross_entropy, accuracy_multi, best_threshold, mean_average_precision, per_class_thresholds,
    predict_with_thresholds, accuracy_multi_per_class, set_threshold, voc07_ap, voc07_map, capped_bs,
    PascalProblem)

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
    assert len(valid) == df['is_valid'].sum() and sorted(train + valid) == list(range(len(df)))
    assert all(isinstance(i, int) for i in train + valid)
    assert len(label_vocab(df, 'labels')) == 20

def test_splitter_uses_positions_not_index(df):
    assert splitter(df.set_index('fname')) == splitter(df)

def test_get_x_get_y(df, tmp_path):
    row = df.iloc[0]
    assert get_y(row) == row['labels'].split(' ')
    get_x = pickle.loads(pickle.dumps(get_x_for(tmp_path)))
    assert get_x(row) == tmp_path/'train'/row['fname']
    with pytest.raises(ValueError, match="'a.jpg' has no labels"): get_y(pd.Series({'fname': 'a.jpg', 'labels': np.nan}))

def test_pascal_dls_on_sample(df):
    dls = pascal_dls(PASCAL, size=32, bs=8, num_workers=0)
    assert len(dls.vocab) == 20 and (len(dls.train_ds), len(dls.valid_ds)) == ((~df.is_valid).sum(), df.is_valid.sum())
    xb, yb = dls.one_batch()
    assert xb.shape == (8, 3, 32, 32) and yb.shape == (8, 20)

def test_pascal_block_reads_vocab(tmp_path, df):
    path, rows = small_copy(tmp_path, df)
    assert list(pascal_block(path, label_vocab(rows, 'labels'), size=32).datasets(rows).vocab) == label_vocab(rows, 'labels')

def test_batch_size_larger_than_training_set_is_lowered(tmp_path, df, capsys):
    path, _ = small_copy(tmp_path, df)
    dls = pascal_dls(path, size=32, num_workers=0)
    assert capsys.readouterr().out == 'pascal_dls: batch size 64 is more than the 4 training items; using 4\n'
    assert dls.train.bs == 4 and len(dls.train) == 1

def test_capped_bs(capsys):
    assert capped_bs(8, 8, 'f') == 8 and capsys.readouterr().out == ''
    assert capped_bs(9, 8, 'f') == 8 and capsys.readouterr().out == 'f: batch size 9 is more than the 8 training items; using 8\n'


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

def test_best_threshold_known_answers_and_ties():
    # positives at 0.6, negatives at 0.3: any threshold in [0.3, 0.6) is perfect (`>` is strict)
    p = torch.tensor([[0.6, 0.3], [0.3, 0.6], [0.3, 0.3]]); t = torch.tensor([[1, 0], [0, 1], [0, 0]])
    thresh, acc = best_threshold(p, t)
    assert isinstance(thresh, float) and isinstance(acc, float)
    assert (thresh, acc) == pytest.approx((0.05 + 8*0.9/28, 1.0))            # the default grid's first point >= 0.3
    assert best_threshold(p, t, [0.1, 0.3, 0.5, 0.7]) == pytest.approx((0.3, 1.0))
    assert best_threshold(p, t, [0.7, 0.1]) == pytest.approx((0.7, 4/6))     # 0.1 gets the 4 negatives wrong (2/6)
    assert best_threshold(p, t, [0.5, 0.4]) == pytest.approx((0.5, 1.0))     # tie: the first

def test_best_threshold_worked_by_hand():
    # right answers out of 12 at 0.1, 0.3, 0.5, 0.7, 0.9: 8, 9, 8, 10, 8
    p = torch.tensor([[0.40, 0.80, 0.1], [0.20, 0.60, 0.1], [0.35, 0.75, 0.1], [0.10, 0.65, 0.5]])
    t = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]])
    assert best_threshold(p, t, [0.1, 0.3, 0.5, 0.7, 0.9]) == pytest.approx((0.7, 10/12))

SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
T1, T2 = torch.tensor([1, 0, 1, 0, 0]), torch.tensor([0, 1, 0, 0, 1])

def test_mean_average_precision_by_hand():
    # (recall, precision) down the ranking; each positive adds 1/2 of recall at its precision
    preds, targs = torch.stack([SCORES, SCORES, SCORES], 1), torch.stack([T1, T2, torch.zeros(5, dtype=torch.long)], 1)
    assert mean_average_precision(preds, targs) == pytest.approx((1/2*1 + 1/2*2/3 + 1/2*1/2 + 1/2*2/5)/2)   # class 3 absent
    with pytest.raises(ValueError, match='no class has a positive'): mean_average_precision(preds, torch.zeros(5, 3))

def test_voc07_ap_by_hand():
    assert voc07_ap(SCORES, T1) == pytest.approx((6*1 + 5*2/3)/11)     # 28/33, vs 5/6 for scikit-learn
    assert voc07_ap(SCORES, T2) == pytest.approx((6*1/2 + 5*2/5)/11)   # 5/11
    assert voc07_ap(SCORES, torch.tensor([1, 1, 0, 0, 0])) == 1.0
    assert voc07_ap(SCORES, torch.tensor([0, 0, 0, 0, 1])) == pytest.approx(11*(1/5)/11)
    with pytest.raises(ValueError, match='no positive target'): voc07_ap(SCORES, torch.zeros(5))

def test_voc07_map_by_hand():
    preds, targs = torch.stack([SCORES, SCORES, SCORES], 1), torch.stack([T1, T2, torch.zeros(5, dtype=torch.long)], 1)
    assert voc07_map(preds, targs) == pytest.approx(43/66)              # the absent class is left out
    with pytest.raises(ValueError, match='no class has a positive'): voc07_map(preds, torch.zeros(5, 3))

def test_per_class_thresholds():
    p = torch.tensor([[0.40, 0.80, 0.1], [0.20, 0.60, 0.1], [0.35, 0.75, 0.1], [0.10, 0.65, 0.5]])
    t = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]])
    grid = [0.1, 0.3, 0.5, 0.7, 0.9]
    ct = per_class_thresholds(p, t, grid)
    assert ct.tolist() == pytest.approx([0.3, 0.7, 0.7])     # class 2 has no positive: the single best, 0.7
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

# --- the command line's problem

def test_problem_registry_and_lines(df):
    from visioncourse.problems import get_problem
    problem = get_problem('pascal')
    assert isinstance(problem, PascalProblem) and (problem.dataset, problem.arch, problem.size) == ('pascal_2007', 'resnet50', 128)
    assert problem.count(PASCAL) == f'{len(df)} rows in train.csv'
    assert problem.files(PASCAL) == [PASCAL/'train'/f for f in df.fname]
    assert problem.describe('a.jpg', dict(labels=['cat', 'dog'], threshold=0.25)) == 'a.jpg: cat dog (threshold 0.25)'
    assert problem.describe('a.jpg', dict(labels=[], threshold=0.5)) == 'a.jpg: (no label above the threshold) (threshold 0.50)'
    assert problem.describe('a.jpg', dict(labels=['cat'], threshold=[0.2, 0.3])) == 'a.jpg: cat (per-class thresholds)'

def test_problem_check_names_bad_csv(tmp_path, df):
    from visioncourse.problems import get_problem
    path, rows = small_copy(tmp_path, df)
    (path/'train'/rows.fname.iloc[0]).write_bytes(b'not a jpeg')
    with pytest.raises(ValueError, match=rows.fname.iloc[0]): get_problem('pascal').check(path)

def test_problem_plots_and_predict(learner, tmp_path):
    path, learn = learner
    problem = PascalProblem()
    extra = problem.plots(learn, tmp_path)
    assert (tmp_path/'threshold_sweep.png').is_file()
    assert set(extra) >= {'threshold', 'accuracy_multi_at_threshold', 'mean_average_precision'}
    assert learn.loss_func.thresh == extra['threshold']
    img = next((path/'train').iterdir())
    pred = problem.predict(learn, img)
    assert pred['threshold'] == pytest.approx(extra['threshold'])
    assert set(pred['labels']) == {c for c, p in pred['probs'].items() if p > extra['threshold']}
    json.dumps(pred)
