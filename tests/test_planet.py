"""Tests of the installed `visioncourse.planet` that a notebook does less well: bad `labels.csv` files and images on disk,
and the command-line `PlanetProblem` (files, learner, predictions from a file or a decoded image, plots). The metric,
the tags and the `DataBlock` are tested beside their code in 05_planet; progressive resizing on the pretrained path
(the resized `DataLoaders` normalised like the first) in tests/test_pretrained.py."""
import json, shutil
from pathlib import Path
import pandas as pd, pytest
from visioncourse.data import dataset_path, count_items
from visioncourse.problems import open_image
from visioncourse.planet import check_labels_csv, problem, PlanetProblem
from visioncourse.multilabel import set_threshold

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

# --- bad input: one line naming the file

def test_check_labels_csv_ok(df, tmp_path):
    assert check_labels_csv(small_copy(tmp_path, df, 3)).image_name.tolist() == df.image_name[:3].tolist()

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
    assert problem.check(root) == [root/'labels.csv'] + [root/'train'/f'{n}.jpg' for n in df.image_name[:3]]
    bad = root/'train'/f'{df.image_name[0]}.jpg'
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(ValueError, match=f'{df.image_name[0]}.jpg: image does not decode'): problem.check(root)

# --- the command-line problem

def test_problem_attributes(df):
    assert isinstance(problem, PlanetProblem)
    assert (problem.name, problem.dataset, problem.arch, problem.size) == ('planet', 'planet_sample', 'resnet34', 128)
    assert count_items(problem.dataset, PLANET) == f'{len(df)} chips in labels.csv'
    assert problem.describe('x.jpg', dict(labels=['clear', 'primary'], threshold=0.2)) == 'x.jpg: clear primary (threshold 0.20)'
    assert 'no tag above the threshold' in problem.describe('x.jpg', dict(labels=[], threshold=0.2))

def test_problem_learner_predict_plots(df, tmp_path):
    root = small_copy(tmp_path/'data', df, 10)
    dls = problem.dls(root, size=32, bs=4, num_workers=0)
    learn = problem.learner(dls, 'resnet18', pretrained=False)
    learn.path = tmp_path
    assert learn.loss_func.thresh == 0.2 and [m.name for m in learn.metrics] == ['accuracy_multi', 'fbeta_score']
    fn = root/'train'/f'{df.image_name[0]}.jpg'
    with learn.no_bar(): pred = problem.predict(learn, fn)
    json.dumps(pred)
    assert pred['threshold'] == 0.2 and sorted(pred['probs']) == sorted(dls.vocab)
    with learn.no_bar(): probs = learn.predict(fn)[2]
    problem_thresh = learn.loss_func.thresh
    set_threshold(learn, probs.topk(2).values.mean().item())   # halfway between the two most likely tags: only the first
    with learn.no_bar(): assert problem.predict(learn, fn)['labels'] == [str(dls.vocab[probs.argmax()])]
    set_threshold(learn, problem_thresh)
    im = open_image(fn)                       # what the web app passes: the chip decoded, in its own mode (CMYK)
    assert im.mode == 'CMYK'                  # so predict must convert it, as PILImage.create does only for files
    with learn.no_bar(): assert problem.predict(learn, im) == pred
    with learn.no_bar(): extra = problem.plots(learn, tmp_path)
    assert (tmp_path/'threshold_sweep.png').is_file()
    assert extra['threshold'] == 0.2
    with learn.no_bar(): f2 = learn.validate()[2]   # the learner's own F2 metric, computed by fastai during validation
    assert extra['fbeta'] == pytest.approx(f2)
