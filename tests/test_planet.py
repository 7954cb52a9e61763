"""Tests of the installed `visioncourse.planet` that a notebook does less well: bad `labels.csv` files and images on disk,
the command-line `PlanetProblem` (files, learner, predictions from a file or a decoded image, plots), and the pretrained
path of progressive resizing. The metric, the tags and the `DataBlock` are tested beside their code in 05_planet."""
import json, shutil
from pathlib import Path
import numpy as np, pandas as pd, pytest
from fastai.vision.all import Normalize, imagenet_stats, set_seed
from visioncourse.data import dataset_path, count_items
from visioncourse.problems import open_image
from visioncourse.planet import check_labels_csv, problem, PlanetProblem

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

def normalize_stats(dls):
    "The (mean, std) of each `Normalize` among the batch transforms of `dls`."
    return [(t.mean.flatten().tolist(), t.std.flatten().tolist()) for t in dls.after_batch.fs if isinstance(t, Normalize)]

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
    assert pred['labels'] == [t for t, p in pred['probs'].items() if p > 0.2]
    im = open_image(fn)                       # what the web app passes: the chip decoded, in its own mode (CMYK)
    assert im.mode == 'CMYK'                  # so predict must convert it, as PILImage.create does only for files
    with learn.no_bar(): assert problem.predict(learn, im) == pred
    with learn.no_bar(): extra = problem.plots(learn, tmp_path)
    assert (tmp_path/'threshold_sweep.png').is_file()
    assert extra['threshold'] == 0.2 and 0 <= extra['fbeta'] <= 1 and 0 <= extra['best_fbeta'] <= 1

# --- the pretrained path (stand-in weights: this tests code, not accuracy)

def test_pretrained_progressive_resizing_keeps_normalize(df, tmp_path, pretrained_weights):
    "Progressive resizing hands the learner new `DataLoaders`: they must normalise like the first (05_planet)."
    set_seed(0)                                                                # the batches below are augmented
    root = small_copy(tmp_path/'data', df, 10)
    dls = problem.dls(root, size=32, bs=4, num_workers=0)
    learn = problem.learner(dls, 'resnet18', pretrained=True)
    assert learn.pretrained is True
    assert any(not p.requires_grad for p in learn.model[0].parameters())       # vision_learner froze the body
    stats = normalize_stats(learn.dls)
    assert len(stats) == 1 and np.allclose(stats[0], imagenet_stats)          # one Normalize: ours, not a second one
    learn.dls = problem.dls(root, size=48, bs=4, num_workers=0)               # the larger size, as in the lesson
    assert learn.dls.one_batch()[0].shape[-2:] == (48, 48)
    assert normalize_stats(learn.dls) == normalize_stats(dls)
    xb = learn.dls.one_batch()[0]
    assert xb.min() < 0                                                        # normalised: raw pixels are in [0, 1]
