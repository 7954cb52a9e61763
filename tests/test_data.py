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

@pytest.mark.parametrize('name', list(DATASETS))
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
])
def test_wrong_layout_gives_reason(tmp_path, name, make, reason):
    (tmp_path/name).mkdir(); make(tmp_path/name)
    with pytest.raises(DatasetNotFoundError) as e: dataset_path(name, roots=[tmp_path], download=False)
    assert reason in str(e.value) and str(tmp_path/name) in str(e.value)

def test_command_line_help():
    exe = Path(sys.executable).parent/'visioncourse'
    out = subprocess.run([str(exe), '--help'], capture_output=True, text=True)
    assert out.returncode == 0 and 'train' in out.stdout and 'predict' in out.stdout
