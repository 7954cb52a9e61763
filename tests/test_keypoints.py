"Tests of the installed `visioncourse.keypoints`: BIWI labels, bad files, splitting, metric, prediction."
import functools, pickle, shutil
from pathlib import Path
import pytest, torch
from fastai.vision.all import load_learner, resnet18
from visioncourse.data import dataset_path
from visioncourse.keypoints import (BiwiFormatError, biwi_dls, get_ctr, img2pose, person_splitter, pixel_error,
                                    predict_ctr, read_calibration, read_pose, read_rgb_cal, sigmoid_range, to_pixels,
                                    biwi_persons, biwi_valid_person, BiwiProblem)

BIWI = dataset_path('biwi_head_pose')
FRAME = BIWI/'01'/'frame_00003_rgb.jpg'

def person_copy(root, person='01', frames=('frame_00003',), pose=True, cal=True):
    "A copy of `frames` of `person` (and its rgb.cal) in `root/person`."
    dst = root/person
    dst.mkdir(parents=True, exist_ok=True)
    for fr in frames:
        shutil.copy(BIWI/person/f'{fr}_rgb.jpg', dst)
        if pose: shutil.copy(BIWI/person/f'{fr}_pose.txt', dst)
    if cal: shutil.copy(BIWI/person/'rgb.cal', dst)
    return dst

def test_img2pose():
    assert img2pose(FRAME) == BIWI/'01'/'frame_00003_pose.txt'
    with pytest.raises(ValueError, match='not a BIWI colour frame'): img2pose(BIWI/'01'/'rgb.cal')

def test_get_ctr_inside_image():
    for f in (FRAME, BIWI/'12'/'frame_00019_rgb.jpg'):
        for extrinsics in (False, True):
            x, y = get_ctr(f, extrinsics=extrinsics).tolist()
            assert 0 <= x < 640 and 0 <= y < 480

def test_get_ctr_by_hand():
    # pose centre (51.9358, 38.2631, 881.756) mm; fx = fy = 517.679, cx = 320, cy = 240.5
    assert torch.allclose(get_ctr(FRAME), torch.tensor([51.9358*517.679/881.756 + 320, 38.2631*517.679/881.756 + 240.5]))
    assert torch.allclose(get_ctr(FRAME), torch.tensor([350.4915, 262.9643]), atol=1e-3)

def test_get_ctr_extrinsics_by_hand():
    # R p + t = (60.2937 - 24.0198, 51.2920 + 5.8896, 880.5620 - 13.2308), then projected with the intrinsics
    assert torch.allclose(get_ctr(FRAME, extrinsics=True), torch.tensor([341.6506, 274.6297]), atol=1e-3)

def test_missing_pose_file(tmp_path):
    d = person_copy(tmp_path, pose=False)
    with pytest.raises(FileNotFoundError, match='frame_00003_pose.txt'): get_ctr(d/'frame_00003_rgb.jpg')

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

def test_missing_rgb_cal(tmp_path):
    d = person_copy(tmp_path, cal=False)
    with pytest.raises(FileNotFoundError, match='rgb.cal'): get_ctr(d/'frame_00003_rgb.jpg')

def test_calibration_cached(tmp_path):
    d = person_copy(tmp_path)
    cal = read_calibration(d)
    (d/'rgb.cal').write_text('garbage')   # not read again: the first reading is cached
    assert read_rgb_cal(d/'..'/d.name/'rgb.cal') is cal
    assert not cal.K.flags.writeable

def test_person_splitter():
    files = sorted(BIWI.glob('*/*_rgb.jpg'))
    train, valid = person_splitter('12')(files)
    n12 = sum(f.parent.name == '12' for f in files)
    assert (len(train), len(valid)) == (len(files) - n12, n12)
    assert {files[i].parent.name for i in valid} == {'12'}
    pickle.loads(pickle.dumps(person_splitter('12')))
    with pytest.raises(ValueError, match='only person'): person_splitter('12')([f for f in files if f.parent.name == '12'])

def test_absent_person_and_default(tmp_path, capsys):
    person_copy(tmp_path, '01', frames=('frame_00003', 'frame_00166'))
    person_copy(tmp_path, '12', frames=('frame_00019',))
    with pytest.raises(ValueError, match='persons present: 01, 12'): biwi_dls(tmp_path, size=(60, 80), valid_person='13', bs=2)
    dls = biwi_dls(tmp_path, size=(60, 80), bs=64)   # no person 13: the last person, 12, is held out; bs capped at 2
    assert (len(dls.train_ds), len(dls.valid_ds), dls.bs) == (2, 1, 2)
    assert capsys.readouterr().out == 'biwi_dls: batch size 64 is more than the 2 training items; using 2\n'

def test_biwi_valid_person(tmp_path):
    for p in ('01', '12', '13', '20'): (tmp_path/p).mkdir()
    (tmp_path/'notes').mkdir()
    assert biwi_persons(tmp_path) == ['01', '12', '13', '20']
    assert biwi_valid_person(tmp_path) == '13'                      # the book's choice when present
    assert biwi_valid_person(tmp_path, '01') == '01' and biwi_valid_person(tmp_path, 5) == '05'
    (tmp_path/'13').rmdir()
    assert biwi_valid_person(tmp_path) == '20'                      # else the last person
    with pytest.raises(ValueError, match='no numbered person folders'): biwi_valid_person(tmp_path/'notes')

def test_batch_targets():
    dls = biwi_dls(BIWI, size=(60, 80), valid_person='12', bs=4)
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 3, 60, 80) and yb.shape == (4, 1, 2)
    assert yb.min() >= -1 and yb.max() <= 1
    xv, yv = dls.valid.one_batch()
    expected = torch.stack([get_ctr(f) for f in dls.valid.items])
    assert torch.allclose(to_pixels(yv.cpu()), expected, atol=1e-3)

def test_sigmoid_range():
    from fastai.layers import sigmoid_range as fastai_sigmoid_range
    x = torch.linspace(-4, 4, 17)
    assert torch.allclose(sigmoid_range(x, -1, 1), fastai_sigmoid_range(x, -1, 1))
    assert torch.allclose(sigmoid_range(torch.tensor([-100., 0., 100.]), -1, 1), torch.tensor([-1., 0., 1.]))

def test_pixel_error():
    assert torch.isclose(pixel_error(torch.tensor([[0., 0.]]), torch.tensor([[0.1, 0.]])), torch.tensor(32.))
    assert torch.isclose(pixel_error(torch.zeros(2, 2), torch.tensor([[[0., 0.1]], [[0., 0.3]]])), torch.tensor(48.))
    assert torch.isclose(pixel_error(torch.tensor([[0., 0.]]), torch.tensor([[0.1, 0.]]), img_size=(100, 50)),
                         torch.tensor(5.))

def test_export_and_predict(tmp_path):
    from visioncourse.learner import course_learner
    dls = biwi_dls(BIWI, size=(60, 80), valid_person='12', bs=4)
    learn = course_learner(dls, resnet18, pretrained=False, y_range=(-1, 1), metrics=pixel_error)
    learn.path = tmp_path
    BiwiProblem().plots(learn, tmp_path)
    assert (tmp_path/'show_results.png').is_file()
    learn.export(tmp_path/'biwi.pkl')
    learn = load_learner(tmp_path/'biwi.pkl')
    for f in (FRAME, BIWI/'12'/'frame_00019_rgb.jpg'):
        x, y = predict_ctr(learn, f).tolist()
        assert 0 <= x <= 640 and 0 <= y <= 480   # y_range keeps predictions inside the image
        pred = BiwiProblem().predict(learn, f)
        assert pred == dict(x=round(x, 1), y=round(y, 1))

def test_get_ctr_picklable():
    for f in (get_ctr, functools.partial(get_ctr, extrinsics=True), pixel_error): pickle.loads(pickle.dumps(f))

def test_missing_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'): biwi_dls(tmp_path/'nowhere')
    with pytest.raises(ValueError, match='no numbered person folders'): biwi_dls(tmp_path)
    with pytest.raises(ValueError, match='persons present: none'): person_splitter('13')([])

# --- the command line's problem

def test_problem_registry_and_lines():
    from visioncourse.problems import get_problem
    problem = get_problem('biwi')
    assert isinstance(problem, BiwiProblem) and (problem.dataset, problem.arch, problem.size) == ('biwi_head_pose', 'resnet18', 320)
    frames = sorted(BIWI.glob('*/*_rgb.jpg'))
    assert problem.count(BIWI) == f"{len(frames)} frames of {len({f.parent.name for f in frames})} persons"
    assert problem.run_settings(BIWI) == dict(valid_person=biwi_valid_person(BIWI))
    assert problem.run_settings(BIWI, valid_person='01') == dict(valid_person='01')
    assert problem.describe('a.jpg', dict(x=1.25, y=300.0)) == 'a.jpg: head centre at x=1.2, y=300.0 px'
    assert 'valid_person' in problem.options

def test_problem_dls_size_is_width():
    dls = BiwiProblem().dls(BIWI, 80, 4, valid_person='12', num_workers=0)
    xb, _ = dls.one_batch()
    assert xb.shape[-2:] == (60, 80)

def test_problem_check_reads_pose_and_calibration(tmp_path):
    d = person_copy(tmp_path, '01', frames=('frame_00003', 'frame_00166'))
    assert len(BiwiProblem().check(tmp_path)) == 2
    (d/'frame_00166_pose.txt').write_text('1 0 0\n0 1 0\n0 0 1\n\n12.5 oops 900\n')
    with pytest.raises(ValueError, match='frame_00166_pose.txt'): BiwiProblem().check(tmp_path)
