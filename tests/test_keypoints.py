"""Tests of the installed `visioncourse.keypoints` that a notebook does less well: damaged and missing files on disk,
layouts built in a temporary folder, the command line's `BiwiProblem`, export and prediction.
The unit checks (the book's formula by hand, `pixel_error`, the batches' targets, the splitter on a hand-built
list, `biwi_valid_person`, pickling in a new process) are in nbs/03_keypoints.ipynb beside the code."""
import inspect, shutil
from pathlib import Path
import pytest, torch
from PIL import Image
from fastai.vision.all import load_learner, resnet18
from visioncourse.data import dataset_path
from visioncourse.keypoints import (BiwiFormatError, biwi_dls, get_ctr, PersonSplitter, predict_ctr,
                                    read_calibration, check_biwi_layout, BiwiProblem, pixel_error)

BIWI = dataset_path('biwi_head_pose')
FRAME = BIWI/'01'/'frame_00003_rgb.jpg'

def person_copy(root, person='01', frames=('frame_00003',), cal=True, src='01'):
    "A layout built for one check: `frames` of folder `src` (image and pose, and its rgb.cal) in `root/person`."
    dst = root/person
    dst.mkdir(parents=True, exist_ok=True)
    for fr in frames:
        for kind in ('rgb.jpg', 'pose.txt'): shutil.copy(BIWI/src/f'{fr}_{kind}', dst)
    if cal: shutil.copy(BIWI/src/'rgb.cal', dst)
    return dst

def frames_of(person):
    "Two frame stems of folder `person` of the dataset in use, read from the folder (no sample file names)."
    return tuple(sorted(p.name[:-len('_rgb.jpg')] for p in (BIWI/person).glob('*_rgb.jpg'))[:2])

# --- damaged and missing files

@pytest.mark.parametrize('missing', ['frame_00003_pose.txt', 'rgb.cal'])
def test_missing_pose_or_calibration_is_named(tmp_path, missing):
    d = person_copy(tmp_path)
    (d/missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing): get_ctr(d/'frame_00003_rgb.jpg')

def test_malformed_pose_file(tmp_path):
    d = person_copy(tmp_path)
    (d/'frame_00003_pose.txt').write_text('1 0 0\n0 1 0\n0 0 1\n\n12.5 30\n')
    with pytest.raises(BiwiFormatError, match='head centre') as e: get_ctr(d/'frame_00003_rgb.jpg')
    assert 'frame_00003_pose.txt' in str(e.value)

@pytest.mark.parametrize('text, problem', [
    ('', 'intrinsics matrix'),
    ('517.679 0 320\n0 517.679 240.5\n\n0 0 0 0\n', 'intrinsics matrix'),
    ('517.679 0 320\n0 oops 240.5\n0 0 1\n', 'not all numbers'),
    ('517.679 0 320\n0 517.679 240.5\n0 0 1\n\n0 0 0 0\n\n1 0 0\n0 1 0\n0 0 1\n', 'extrinsic translation'),
    ('0 0 320\n0 0 240.5\n0 0 1\n\n0 0 0 0\n\n1 0 0\n0 1 0\n0 0 1\n\n0 0 0\n', 'focal lengths'),
])
def test_malformed_rgb_cal(tmp_path, text, problem):
    d = person_copy(tmp_path)
    (d/'rgb.cal').write_text(text)
    with pytest.raises(BiwiFormatError, match=problem) as e: read_calibration(d)
    assert str((d/'rgb.cal').resolve()) in str(e.value)
    with pytest.raises(ValueError): get_ctr(d/'frame_00003_rgb.jpg')

def test_calibration_cached(tmp_path):
    d = person_copy(tmp_path)
    cal = read_calibration(d)
    (d/'rgb.cal').write_text('garbage')   # not read again: the first reading is cached
    assert read_calibration(d/'..'/d.name) is cal
    assert not cal.K.flags.writeable

# --- layouts on disk

def test_absent_person_and_default(tmp_path, capsys):
    train = frames_of('01')   # one or two frames, whatever the cut holds
    person_copy(tmp_path, '01', frames=train)
    person_copy(tmp_path, '12', frames=frames_of('12')[:1], src='12')
    with pytest.raises(ValueError, match='persons present: 01, 12'): biwi_dls(tmp_path, size=(60, 80), valid_person='13', bs=2)
    dls = biwi_dls(tmp_path, size=(60, 80), bs=64)   # no folder 13: the last one, 12, is held out; bs capped
    n = len(train)
    assert (len(dls.train_ds), len(dls.valid_ds), dls.bs) == (n, 1, n)
    assert {Path(o).parent.name for o in dls.valid.items} == {'12'}
    assert capsys.readouterr().out == f'biwi_dls: batch size 64 is more than the {n} training items; using {n}\n'

def test_missing_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'): biwi_dls(tmp_path/'nowhere')
    with pytest.raises(ValueError, match='no numbered person folders'): biwi_dls(tmp_path)
    with pytest.raises(ValueError, match='persons present: none'): PersonSplitter('13')([])

def test_check_layout(tmp_path):
    "Each way a BIWI layout can be wrong is one line naming the folder or file, before any training."
    with pytest.raises(FileNotFoundError, match=str(tmp_path/'nowhere')): check_biwi_layout(tmp_path/'nowhere')
    (tmp_path/'notes').mkdir()
    with pytest.raises(ValueError, match='no numbered person folders'): check_biwi_layout(tmp_path)
    person_copy(tmp_path, '01')
    assert check_biwi_layout(tmp_path) == ['01']
    (tmp_path/'02').mkdir(); shutil.copy(BIWI/'01'/'rgb.cal', tmp_path/'02')
    with pytest.raises(ValueError) as e: check_biwi_layout(tmp_path)
    assert str(e.value) == f"{tmp_path/'02'}: no frames (frame_XXXXX_rgb.jpg)"
    person_copy(tmp_path, '02', cal=False)
    (tmp_path/'02'/'frame_00003_pose.txt').unlink()
    with pytest.raises(ValueError) as e: BiwiProblem().check(tmp_path)
    assert str(e.value) == f"{tmp_path/'02'/'frame_00003_rgb.jpg'}: its pose file frame_00003_pose.txt is missing"
    assert '\n' not in str(e.value)

def test_problem_check_reads_pose_and_calibration(tmp_path):
    frames = frames_of('01')
    d = person_copy(tmp_path, '01', frames=frames)
    assert len(BiwiProblem().check(tmp_path)) == len(frames)
    (d/f'{frames[-1]}_pose.txt').write_text('1 0 0\n0 1 0\n0 0 1\n\n12.5 oops 900\n')
    with pytest.raises(ValueError, match=f'{frames[-1]}_pose.txt'): BiwiProblem().check(tmp_path)

# --- the command line's problem

def test_problem_registry_and_lines():
    from visioncourse.problems import get_problem
    problem = get_problem('biwi')
    assert isinstance(problem, BiwiProblem) and (problem.dataset, problem.arch, problem.size) == ('biwi_head_pose', 'resnet18', 320)
    frames = sorted(BIWI.glob('*/*_rgb.jpg'))
    from visioncourse.data import count_items
    assert count_items(problem.dataset, BIWI) == f"{len(frames)} frames of {len({f.parent.name for f in frames})} persons"
    assert problem.run_settings(BIWI, valid_person='01') == dict(valid_person='01')
    assert problem.run_settings(BIWI, valid_person=1) == dict(valid_person='01')
    assert problem.describe('a.jpg', dict(x=1.25, y=300.0)) == 'a.jpg: head centre at x=1.2, y=300.0 px'

def test_problem_option_reaches_dls():
    "`options` names a keyword of `dls` and `run_settings`; the folder it names is the validation set."
    problem = BiwiProblem()
    assert list(problem.options) == ['valid_person']
    for method in (problem.dls, problem.run_settings): assert 'valid_person' in inspect.signature(method).parameters
    persons = sorted({p.parent.name for p in BIWI.glob('*/*_rgb.jpg')})
    dls = problem.dls(BIWI, 80, 2, valid_person=persons[0], num_workers=0)
    assert {Path(o).parent.name for o in dls.valid.items} == {persons[0]}
    assert len(dls.valid_ds) == len(list((BIWI/persons[0]).glob('*_rgb.jpg')))

def test_problem_dls_size_is_width():
    dls = BiwiProblem().dls(BIWI, 80, 4, num_workers=0)
    xb, _ = dls.one_batch()
    assert xb.shape[-2:] == (60, 80)

def test_export_and_predict(tmp_path):
    "Plots, export, load in this process, and predictions from a path and from decoded images (the same answer as from the file)."
    from visioncourse.learner import course_learner
    dls = biwi_dls(BIWI, size=(60, 80), bs=4)
    learn = course_learner(dls, resnet18, pretrained=False, y_range=(-1, 1), metrics=pixel_error)
    learn.path = tmp_path
    BiwiProblem().plots(learn, tmp_path)
    assert (tmp_path/'show_results.png').is_file()
    learn.export(tmp_path/'biwi.pkl')
    learn = load_learner(tmp_path/'biwi.pkl')
    assert 'out' in inspect.signature(BiwiProblem.predict).parameters
    frames = sorted(BIWI.glob('*/*_rgb.jpg'))
    for f in frames[::max(1, len(frames)//3)]:   # a few frames, on the sample as on the full dataset
        x, y = predict_ctr(learn, f).tolist()
        assert 0 <= x <= 640 and 0 <= y <= 480   # y_range keeps predictions inside the image
        pred = BiwiProblem().predict(learn, f, out=tmp_path)
        assert pred == dict(x=round(x, 1), y=round(y, 1))
        with Image.open(f) as im: assert BiwiProblem().predict(learn, im.copy()) == pred
    assert sorted(p.name for p in tmp_path.iterdir()) == ['biwi.pkl', 'show_results.png']   # predict wrote nothing
    small = Image.open(FRAME).convert('L').resize((320, 240))   # a grey image of another size: pixels of that image
    x, y = predict_ctr(learn, small).tolist()
    assert 0 <= x <= 320 and 0 <= y <= 240
