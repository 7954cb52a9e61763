"Tests of the installed package: it imports, `dataset_path` finds the samples, bad input gets a clear message."
import subprocess, sys, warnings
from pathlib import Path
import pytest
import visioncourse
from visioncourse.data import dataset_path, layout_problem, DatasetNotFoundError, DATASETS

def test_imports_and_all():
    from visioncourse import all as vc_all
    assert visioncourse.__version__
    assert 'dataset_path' in vc_all.__all__ and 'course_learner' in vc_all.__all__

def test_star_import_gives_public_names():
    ns = {}
    exec('from visioncourse.all import *', ns)
    assert callable(ns['dataset_path']) and callable(ns['course_learner'])

SAMPLES = ['pets', 'pascal_2007', 'biwi_head_pose', 'planet_sample', 'camvid_tiny', 'imdb_sample']  # in ../shared/realdata

@pytest.mark.parametrize('name', SAMPLES)
def test_finds_each_sample(name):
    path = dataset_path(name)
    assert path.name == name and layout_problem(name, path) is None

def test_env_var_folder_comes_first(tmp_path, monkeypatch):
    (tmp_path/'pets'/'images').mkdir(parents=True)
    (tmp_path/'pets'/'images'/'Abyssinian_1.jpg').write_bytes(b'')
    monkeypatch.setenv('VISIONCOURSE_DATA', str(tmp_path))
    assert dataset_path('pets') == tmp_path/'pets'

def test_env_var_folder_with_wrong_layout_warns_and_falls_back(tmp_path, monkeypatch):
    (tmp_path/'pets').mkdir()
    monkeypatch.setenv('VISIONCOURSE_DATA', str(tmp_path))
    with pytest.warns(UserWarning, match="no 'images/' folder"):
        path = dataset_path('pets')
    assert path != tmp_path/'pets'

def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match='known datasets: pets, pascal_2007, biwi_head_pose'):
        dataset_path('imagenet')

def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e: dataset_path('pets', roots=[tmp_path], download=False)
    assert f'{tmp_path}/pets does not exist' in str(e.value)

@pytest.mark.parametrize('name,make,reason', [
    ('pets',           lambda p: (p/'images').mkdir(),                          'no *.jpg files'),
    ('pascal_2007',    lambda p: (p/'train').mkdir(),                           "no 'train.csv'"),
    ('pascal_2007',    lambda p: (p/'train.csv').write_text('fname,labels,is_valid\n'), "no 'train/' folder"),
    ('biwi_head_pose', lambda p: (p/'notes').mkdir(),                           'no numbered person folders'),
    ('biwi_head_pose', lambda p: (p/'01').mkdir(),                              'holds rgb.cal, *_rgb.jpg and *_pose.txt'),
    ('planet_sample',  lambda p: (p/'train').mkdir(),                           "no 'labels.csv'"),
    ('planet_sample',  lambda p: ((p/'train').mkdir(), (p/'labels.csv').write_text('image_name,tags\n')), 'no *.jpg files'),
    ('camvid_tiny',    lambda p: (p/'images').mkdir(),                          "no 'labels/' folder"),
    ('camvid_tiny',    lambda p: ((p/'images').mkdir(), (p/'labels').mkdir()),  "no 'codes.txt'"),
    ('imdb_sample',    lambda p: (p/'texts.txt').write_text('x'),               "no 'texts.csv'"),
    ('imdb',           lambda p: (p/'train'/'pos').mkdir(parents=True),         "no 'train/neg/' folder"),
])
def test_wrong_layout_gives_reason(tmp_path, name, make, reason):
    (tmp_path/name).mkdir(); make(tmp_path/name)
    with pytest.raises(DatasetNotFoundError) as e: dataset_path(name, roots=[tmp_path], download=False)
    assert reason in str(e.value) and str(tmp_path/name) in str(e.value)

def test_every_dataset_is_counted():
    from visioncourse.data import count_items
    assert count_items('pets', dataset_path('pets')) == '370 images'
    assert count_items('imdb_sample', dataset_path('imdb_sample')) == '1000 reviews in texts.csv'  # README: 800 + 200 rows

def test_data_module_is_light():
    "`visioncourse.data` (and so `visioncourse datasets`) imports neither torch nor fastai."
    code = "import sys, visioncourse.data; print(sorted(m for m in ('torch', 'fastai') if m in sys.modules))"
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip() == '[]'

def test_urls_are_fastais():
    from fastai.data.external import URLs
    assert DATASETS['planet_sample'] == URLs.PLANET_SAMPLE and DATASETS['imdb'] == URLs.IMDB and DATASETS['pets'] == URLs.PETS
