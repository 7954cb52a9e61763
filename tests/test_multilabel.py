"""Tests of the installed `visioncourse.multilabel` that a notebook does not do well: `train.csv` files on disk, exported
learners loaded in a fresh process, the command line's `PascalProblem` writing its plot and predicting decoded images.
The unit checks of the lesson's functions (loss, metrics, thresholds, mAP, splitter, vocabulary) are in
nbs/02_multilabel.ipynb, beside the code."""
import io, json, subprocess, sys, warnings
import pandas as pd, pytest, torch
from PIL import Image
from visioncourse.data import dataset_path
from visioncourse.multilabel import check_train_csv, pascal_dls, set_threshold, PascalProblem

PASCAL = dataset_path('pascal_2007')

@pytest.fixture(scope='module')
def df(): return pd.read_csv(PASCAL/'train.csv')

def pascal_cut(data_cut):
    "A cut of PASCAL in its layout (conftest's `data_cut`): 7 rows of train.csv, of both splits, and their images; (its folder, its rows)."
    path = data_cut('pascal_2007', 7, n_test=0)
    return path, pd.read_csv(path/'train.csv')

@pytest.fixture
def cut(data_cut): return pascal_cut(data_cut)

# --- train.csv read from disk

def test_batch_size_larger_than_training_set_is_lowered(cut, capsys):
    path, rows = cut
    n_train, n_valid = (~rows.is_valid).sum(), rows.is_valid.sum()
    dls = pascal_dls(path, size=32, num_workers=0)
    assert capsys.readouterr().out == f'pascal_dls: batch size 64 is more than the {n_train} training items; using {n_train}\n'
    assert dls.train.bs == n_train and len(dls.train) == 1
    assert (len(dls.train_ds), len(dls.valid_ds)) == (n_train, n_valid)

def test_missing_column(cut):
    path, rows = cut
    rows.drop(columns='labels').to_csv(path/'train.csv', index=False)
    with pytest.raises(ValueError, match=r'train\.csv: missing column\(s\) labels'): pascal_dls(path)

def test_empty_labels(cut):
    path, rows = cut
    bad = rows.fname.iloc[1]
    rows.assign(labels=rows['labels'].where(rows.fname != bad, '')).to_csv(path/'train.csv', index=False)
    with pytest.raises(ValueError, match=f'train.csv: empty labels for {bad}'): pascal_dls(path)

def test_listed_file_missing(cut):
    path, rows = cut
    gone = rows.fname.iloc[2]
    (path/'train'/gone).unlink()
    with pytest.raises(FileNotFoundError, match=f'train.csv: 1 listed image.*not found.*{gone}'): pascal_dls(path)

def test_no_csv_unreadable_csv(cut, tmp_path):
    with pytest.raises(FileNotFoundError, match='train.csv: file not found'): check_train_csv(tmp_path)
    path, rows = cut
    (path/'train.csv').write_text('')
    with pytest.raises(ValueError, match='cannot be read as CSV'): check_train_csv(path)

@pytest.mark.parametrize('is_valid,message', [
    ('maybe', 'column is_valid must hold True/False only, got maybe'),
    ('', 'column is_valid must hold True/False only, got nan'),
    (True, 'no training rows'),
    (False, 'no validation rows'),
])
def test_bad_is_valid_column(cut, is_valid, message):
    path, rows = cut
    rows.assign(is_valid=is_valid).to_csv(path/'train.csv', index=False)
    with pytest.raises(ValueError, match=rf'train\.csv: {message}'): check_train_csv(path)

def test_is_valid_as_ones_and_zeros_gives_the_same_split(cut):
    path, rows = cut
    rows.assign(is_valid=rows.is_valid.astype(int)).to_csv(path/'train.csv', index=False)
    assert pd.read_csv(path/'train.csv').is_valid.dtype != bool
    assert check_train_csv(path).is_valid.tolist() == rows.is_valid.tolist()
    dls = pascal_dls(path, size=32, bs=2, num_workers=0)
    assert (len(dls.train_ds), len(dls.valid_ds)) == ((~rows.is_valid).sum(), rows.is_valid.sum())

# --- the threshold travels with the exported learner

@pytest.fixture(scope='module')
def learner(data_cut):
    from fastai.vision.all import resnet18
    from visioncourse.learner import course_learner
    from visioncourse.multilabel import accuracy_multi
    path, _ = pascal_cut(data_cut)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = pascal_dls(path, size=32, bs=4, num_workers=0)
    return path, course_learner(dls, resnet18, pretrained=False, metrics=accuracy_multi)

def test_set_threshold_survives_export(learner, tmp_path):
    "Below every probability every class is predicted, above every one none: the default 0.5 cannot do both."
    from fastai.learner import load_learner
    path, learn = learner
    img = next((path/'train').iterdir())
    probs = learn.predict(img)[2]
    for thresh, n_labels in [(float(probs.min()) - 1e-3, len(probs)), (float(probs.max()) + 1e-3, 0)]:
        set_threshold(learn, thresh)
        learn.export(tmp_path/'m.pkl')
        loaded = load_learner(tmp_path/'m.pkl')
        assert loaded.loss_func.thresh == thresh
        labels, decoded, _ = loaded.predict(img)
        assert len(labels) == n_labels and int(decoded.sum()) == n_labels

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

# --- the command line's problem

def test_problem_registry(df):
    from visioncourse.problems import get_problem
    problem = get_problem('pascal')
    assert isinstance(problem, PascalProblem) and (problem.dataset, problem.arch, problem.size) == ('pascal_2007', 'resnet50', 128)
    assert problem.files(PASCAL) == [PASCAL/'train'/f for f in df.fname]

def test_problem_check_names_bad_image_and_bad_csv(cut):
    from visioncourse.problems import get_problem
    path, rows = cut
    assert get_problem('pascal').check(path) == [path/'train'/f for f in rows.fname]
    (path/'train'/rows.fname.iloc[0]).write_bytes(b'not a jpeg')
    with pytest.raises(ValueError, match=rows.fname.iloc[0]): get_problem('pascal').check(path)
    rows.assign(is_valid=False).to_csv(path/'train.csv', index=False)
    with pytest.raises(ValueError, match=r'train\.csv: no validation rows'): get_problem('pascal').check(path)

def test_problem_plots_and_predict(learner, tmp_path):
    path, learn = learner
    problem = PascalProblem()
    extra = problem.plots(learn, tmp_path)
    png = tmp_path/'threshold_sweep.png'
    assert png.is_file() and Image.open(png).width < 600   # saved small
    assert set(extra) >= {'threshold', 'accuracy_multi_at_threshold', 'mean_average_precision', 'voc07_map'}
    assert learn.loss_func.thresh == extra['threshold']
    img = next((path/'train').iterdir())
    pred = problem.predict(learn, img)
    assert pred['threshold'] == pytest.approx(extra['threshold'])
    json.dumps(pred)
    # predict decodes with the learner's threshold: put between the k-th and (k+1)-th highest probabilities of the
    # image, it must name exactly the k most probable classes, whatever the model learned
    probs = learn.predict(img)[2]
    top = probs.argsort(descending=True)
    for k in sorted({1, min(3, len(probs) - 1)}):
        set_threshold(learn, float(probs[top[k-1]] + probs[top[k]]) / 2)
        assert set(problem.predict(learn, img)['labels']) == {learn.dls.vocab[i] for i in top[:k]}
    decoded = Image.open(io.BytesIO(img.read_bytes())); decoded.load()   # as the web service passes it
    assert problem.predict(learn, decoded)['probs'] == pred['probs']
    with pytest.raises(ValueError, match='does not exist'): problem.predict(learn, path/'train'/'nope.jpg')
