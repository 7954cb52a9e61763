"""Tests of the installed `visioncourse.planet` that a notebook does less well: bad `labels.csv` files and images on disk,
and the command-line `PlanetProblem` (files, learner, predictions from a file or a decoded image, plots). The metric,
the tags and the `DataBlock` are tested beside their code in 05_planet; progressive resizing on the pretrained path
(the resized `DataLoaders` normalised like the first) in tests/test_pretrained.py."""
import json
import pandas as pd, pytest
from visioncourse.data import dataset_path, count_items
from visioncourse.problems import open_image
from visioncourse.planet import check_labels_csv, problem, PlanetProblem
from visioncourse.multilabel import set_threshold

PLANET = dataset_path('planet_sample')

@pytest.fixture(scope='module')
def df(): return pd.read_csv(PLANET/'labels.csv')

@pytest.fixture
def planet_cut(data_cut):
    "`planet_cut(n, edit=None)`: a cut of Planet with its first `n` chips (conftest's `data_cut`), its labels.csv changed by `edit`."
    def make(n, edit=None):
        root = data_cut('planet_sample', n)
        if edit: edit(pd.read_csv(root/'labels.csv')).to_csv(root/'labels.csv', index=False)
        return root
    return make

# --- bad input: one line naming the file

def test_check_labels_csv_ok(planet_cut, df):
    assert check_labels_csv(planet_cut(3)).image_name.tolist() == df.image_name[:3].tolist()

def test_labels_csv_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match='labels.csv: file not found'): check_labels_csv(tmp_path)

def test_labels_csv_wrong_columns(planet_cut):
    root = planet_cut(3, lambda d: d.rename(columns={'tags': 'labels'}))
    with pytest.raises(ValueError, match=r'labels.csv: missing column\(s\) tags'): check_labels_csv(root)

def test_labels_csv_empty_tags(planet_cut, df):
    root = planet_cut(3, lambda d: d.assign(tags=['clear', '', 'haze']))
    with pytest.raises(ValueError, match=f'empty tags for {df.image_name[1]}'): check_labels_csv(root)

def test_listed_image_missing(planet_cut, df):
    root = planet_cut(3)
    (root/'train'/f'{df.image_name[2]}.jpg').unlink()
    with pytest.raises(FileNotFoundError, match=rf'1 listed image\(s\) not found .*{df.image_name[2]}.jpg'):
        problem.check(root)

def test_check_decodes_every_image(planet_cut, df):
    root = planet_cut(3)
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

def test_problem_learner_predict_plots(planet_cut, df, tmp_path):
    root = planet_cut(10)
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
