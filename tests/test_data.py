"""`dataset_path` on this machine's file system: every sample is found in its layout, and `$VISIONCOURSE_DATA` comes
first or is skipped with a warning. The rest of `visioncourse.data` (names, layouts, counts, messages) is tested
beside its code in nbs/00a_data.ipynb; `visioncourse datasets` in tests/test_cli.py."""
from pathlib import Path
import pytest
from visioncourse.data import dataset_path, layout_problem

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
