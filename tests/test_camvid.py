"Tests of the installed `visioncourse.camvid`: the label function, acc_camvid by hand, bad input, the full layout, the problem."
import functools, json, pickle, shutil
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from fastai.vision.all import get_image_files
from visioncourse.data import dataset_path
from visioncourse.camvid import (camvid_codes, mask_file, camvid_dls, acc_camvid, class_shares, check_camvid,
    mask_codes, problem, CamvidProblem)

CAMVID = dataset_path('camvid_tiny')
FNAMES = get_image_files(CAMVID/'images')

def small_copy(tmp, n=3, valid=None):
    "A CamVid root in `tmp` with the first `n` frames, their masks, codes.txt and optionally valid.txt."
    (tmp/'images').mkdir(parents=True); (tmp/'labels').mkdir()
    shutil.copy(CAMVID/'codes.txt', tmp)
    for f in FNAMES[:n]: shutil.copy(f, tmp/'images'); shutil.copy(mask_file(f), tmp/'labels')
    if valid is not None: (tmp/'valid.txt').write_text(''.join(f'{f.name}\n' for f in valid))
    return tmp

def test_codes_and_label_function():
    codes = camvid_codes(CAMVID)
    assert len(codes) == 32 and list(codes).index('Void') == 30
    assert mask_file(Path('x/images/a_1.png')) == Path('x/labels/a_1_P.png')

def test_acc_camvid_hand_worked():
    scores = torch.tensor([[[[5., 5.], [0., 0.]], [[0., 1.], [5., 5.]], [[0., 0.], [0., 0.]]]])
    targ = torch.tensor([[[0, 1], [2, 1]]])    # predictions [[0,0],[1,1]]: right, wrong, Void (ignored), right
    assert acc_camvid(scores, targ, void_code=2).item() == pytest.approx(2/3)
    assert acc_camvid(scores, targ[:, None], void_code=2).item() == pytest.approx(2/3)
    assert acc_camvid(scores, targ, void_code=7).item() == pytest.approx(2/4)
    metric = pickle.loads(pickle.dumps(functools.partial(acc_camvid, void_code=2)))
    assert metric(scores, targ).item() == pytest.approx(2/3)

def test_class_shares():
    assert class_shares(np.array([[0, 0], [1, 2]]), ['a', 'b', 'c', 'd']) == {'a': 0.5, 'b': 0.25, 'c': 0.25}
    assert list(class_shares(np.array([[3, 1, 1]]), 'abcd')) == ['b', 'd']

def test_sample_passes_check():
    assert check_camvid(CAMVID) == FNAMES

def test_image_without_mask(tmp_path):
    root = small_copy(tmp_path)
    mask_file(root/'images'/FNAMES[1].name).unlink()
    with pytest.raises(FileNotFoundError, match=f'{FNAMES[1].name}: no mask'): problem.check(root)

def test_mask_of_other_size(tmp_path):
    root = small_copy(tmp_path)
    m = mask_file(root/'images'/FNAMES[2].name)
    Image.open(m).resize((64, 48), Image.NEAREST).save(m)
    with pytest.raises(ValueError, match=f'{FNAMES[2].stem}_P.png: mask is 64x48 but its image is 128x96'): problem.check(root)

def test_mask_values_outside_codes(tmp_path):
    root = small_copy(tmp_path)
    m = mask_file(root/'images'/FNAMES[0].name)
    a = np.array(Image.open(m)); a[0, 0] = 32; Image.fromarray(a).save(m)
    with pytest.raises(ValueError, match=rf'{FNAMES[0].stem}_P.png: class number\(s\) 32 not in codes.txt'): problem.check(root)

def test_codes_missing(tmp_path):
    root = small_copy(tmp_path); (root/'codes.txt').unlink()
    with pytest.raises(FileNotFoundError, match='codes.txt: file not found'): check_camvid(root)

def test_random_split_seeded():
    a = camvid_dls(CAMVID, size=(48, 64), bs=4, n_items=20, num_workers=0)
    b = camvid_dls(CAMVID, size=(48, 64), bs=4, n_items=20, num_workers=0)
    assert (len(a.train_ds), len(a.valid_ds)) == (16, 4)
    assert a.valid_ds.items == b.valid_ds.items

def test_full_layout_uses_valid_txt(tmp_path):
    root = small_copy(tmp_path, 5, valid=FNAMES[3:5])
    dls = camvid_dls(root, size=(48, 64), bs=2, num_workers=0)
    assert sorted(f.name for f in dls.valid_ds.items) == sorted(f.name for f in FNAMES[3:5])
    assert len(dls.train_ds) == 3
    xb, yb = dls.one_batch()
    assert xb.shape[1:] == (3, 48, 64) and yb.shape[1:] == (48, 64)
    assert problem.files(root)[:2] == [root/'codes.txt', root/'valid.txt']

def test_problem_attributes():
    assert isinstance(problem, CamvidProblem)
    assert (problem.name, problem.dataset, problem.arch, problem.size) == ('camvid', 'camvid_tiny', 'resnet34', 96)
    assert problem.count(CAMVID) == '100 frames, 32 classes'
    assert len(problem.check(CAMVID)) == 1 + 200
    assert (problem.describe('x.png', dict(mask='out/x_pred.png', shares={'Road': 0.41, 'Sky': 0.2, 'Car': 0.1}))
            == 'x.png: mask written to out/x_pred.png; Road 41%, Sky 20%, Car 10%')

def test_problem_learner_predict_plots(tmp_path):
    root = small_copy(tmp_path/'data', 6)
    dls = problem.dls(root, size=48, bs=2, num_workers=0)
    assert dls.one_batch()[0].shape[-2:] == (48, 64)
    learn = problem.learner(dls, 'resnet18', pretrained=False)
    learn.path = tmp_path
    assert list(mask_codes(dls)) == list(camvid_codes(CAMVID)) and learn.metrics[0].name == 'acc_camvid'
    p = CamvidProblem(); p.out_dir = tmp_path/'out'; p.out_dir.mkdir()
    fn = root/'images'/FNAMES[0].name
    with learn.no_bar(): pred = p.predict(learn, fn)
    json.dumps(pred)
    assert Path(pred['mask']) == p.out_dir/f'{fn.stem}_pred.png'
    mask = np.array(Image.open(pred['mask']))
    assert mask.shape == (96, 128) and mask.max() < 32
    assert sum(pred['shares'].values()) == pytest.approx(1, abs=1e-3)
    with learn.no_bar(): again = p.predict(learn, fn)
    assert Path(again['mask']).name == f'{fn.stem}_pred_1.png'       # never over an existing file
    with learn.no_bar(): assert p.plots(learn, tmp_path) == {}
    assert (tmp_path/'show_results.png').is_file()
