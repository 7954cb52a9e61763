"""Tests of the installed `visioncourse.camvid` that a notebook does less well: bad datasets on disk (masks, codes.txt,
valid.txt), the full CamVid layout, the command-line `CamvidProblem` (files, learner, masks written into the folder it
is given and never over a file), and the pretrained U-Net. The metric, the label function and `class_shares` are tested
beside their code in 06_camvid; the sizes 06's cells use, with and without a GPU, in tests/test_lesson_settings.py."""
import json, threading
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from fastai.vision.all import get_image_files, Normalize, imagenet_stats, set_seed
from visioncourse.data import dataset_path, count_items
from visioncourse.camvid import camvid_codes, mask_file, camvid_dls, check_camvid, mask_codes, save_new_png, problem, CamvidProblem

CAMVID = dataset_path('camvid_tiny')
FNAMES = sorted(get_image_files(CAMVID/'images'))

def frames(root): return sorted(get_image_files(root/'images'))

@pytest.fixture
def camvid_cut(data_cut):
    """`camvid_cut(n, valid=None)`: a cut of `n` CamVid frames (conftest's `data_cut`), with a valid.txt listing the cut's
    frames `frames(root)[valid]` (`valid` a slice), or none. Tests name frames of the cut: a cut of the full dataset
    keeps valid.txt's share of each split, not the first `n` frames."""
    def make(n=3, valid=None):
        root = data_cut('camvid_tiny', n)
        (root/'valid.txt').unlink(missing_ok=True)
        if valid is not None: (root/'valid.txt').write_text(''.join(f'{f.name}\n' for f in frames(root)[valid]))
        return root
    return make

# --- bad input: one line naming the file, before any training

def test_sample_passes_check():
    assert check_camvid(CAMVID) == get_image_files(CAMVID/'images')

def test_image_without_mask(camvid_cut):
    root = camvid_cut(); f = frames(root)[1]
    mask_file(f).unlink()
    with pytest.raises(FileNotFoundError, match=f'{f.name}: no mask'): problem.check(root)

def test_mask_of_other_size(camvid_cut):
    root = camvid_cut(); f = frames(root)[2]
    m = mask_file(f)
    w, h = Image.open(m).size
    Image.open(m).resize((w//2, h//2), Image.NEAREST).save(m)
    with pytest.raises(ValueError, match=f'{f.stem}_P.png: mask is {w//2}x{h//2} but its image is {w}x{h}'):
        problem.check(root)

def test_mask_values_outside_codes(camvid_cut):
    root = camvid_cut(); f = frames(root)[0]
    m = mask_file(f)
    n = len(camvid_codes(CAMVID))
    a = np.array(Image.open(m)); a[0, 0] = n; Image.fromarray(a).save(m)
    with pytest.raises(ValueError, match=rf'{f.stem}_P.png: class number\(s\) {n} not in codes.txt'): problem.check(root)

def test_codes_missing(camvid_cut):
    root = camvid_cut(); (root/'codes.txt').unlink()
    with pytest.raises(FileNotFoundError, match='codes.txt: file not found'): check_camvid(root)

def test_valid_txt_naming_a_missing_frame_fails_in_check(camvid_cut):
    "A missing frame in valid.txt is one line naming valid.txt and the frame, before training (else an epoch trains, then an empty validation set stops the run)."
    root = camvid_cut(4)
    (root/'valid.txt').write_text(f"{frames(root)[1].name}\nno_such_frame.png\n")
    with pytest.raises(FileNotFoundError) as e: problem.check(root)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(str(root/'valid.txt')) and "'no_such_frame.png'" in msg

def test_valid_txt_name_with_a_stray_space_is_named(camvid_cut):
    root = camvid_cut(4); name = frames(root)[1].name
    (root/'valid.txt').write_text(f'{name} \n')               # FileSplitter would match no frame
    with pytest.raises(FileNotFoundError, match=rf"valid.txt: 1 listed frame\(s\) not in .*'{name} '"): problem.check(root)

def test_valid_txt_with_windows_line_ends_passes(camvid_cut):
    "`Path.read_text` (FileSplitter's reader) turns \\r\\n into \\n, so these names match."
    root = camvid_cut(4)
    (root/'valid.txt').write_bytes(f'{frames(root)[1].name}\r\n'.encode())
    assert check_camvid(root) == get_image_files(root/'images')

@pytest.mark.parametrize('valid, message', [(slice(0, 0), 'lists no frame'), (slice(None), 'lists every frame')])
def test_valid_txt_leaving_an_empty_set(camvid_cut, valid, message):
    root = camvid_cut(3, valid=valid)
    with pytest.raises(ValueError, match=f'valid.txt: {message}'): check_camvid(root)

def test_full_layout_uses_valid_txt(camvid_cut):
    root = camvid_cut(5, valid=slice(3, 5))
    assert check_camvid(root) == get_image_files(root/'images')
    dls = camvid_dls(root, size=(48, 64), bs=2, num_workers=0)
    assert sorted(f.name for f in dls.valid_ds.items) == sorted(f.name for f in frames(root)[3:5])
    assert len(dls.train_ds) == 3
    xb, yb = dls.one_batch()
    assert xb.shape[1:] == (3, 48, 64) and yb.shape[1:] == (48, 64)
    assert problem.files(root)[:2] == [root/'codes.txt', root/'valid.txt']

# --- the command-line problem

def test_problem_attributes():
    assert isinstance(problem, CamvidProblem) and not hasattr(problem, 'out_dir')
    assert (problem.name, problem.dataset, problem.arch, problem.size) == ('camvid', 'camvid_tiny', 'resnet34', 96)
    assert count_items(problem.dataset, CAMVID) == f'{len(FNAMES)} frames, {len(camvid_codes(CAMVID))} classes'
    assert len(problem.check(CAMVID)) == 1 + (CAMVID/'valid.txt').is_file() + 2*len(FNAMES)   # codes.txt, valid.txt, frames, masks
    assert (problem.describe('x.png', dict(mask='out/x_pred.png', shares={'Road': 0.41, 'Sky': 0.2, 'Car': 0.1}))
            == 'x.png: mask written to out/x_pred.png; Road 41%, Sky 20%, Car 10%')

def test_problem_learner_predict_plots(camvid_cut, tmp_path, monkeypatch):
    root = camvid_cut(6)
    dls = problem.dls(root, size=48, bs=2, num_workers=0)
    assert dls.one_batch()[0].shape[-2:] == (48, 64)
    learn = problem.learner(dls, 'resnet18', pretrained=False)
    learn.path = tmp_path
    assert list(mask_codes(dls)) == list(camvid_codes(CAMVID)) and learn.metrics[0].name == 'acc_camvid'
    fn = frames(root)[0]
    out = tmp_path/'out'                                               # not there yet: predict makes it
    with learn.no_bar(): pred = problem.predict(learn, fn, out=out)
    json.dumps(pred)
    assert Path(pred['mask']) == out/f'{fn.stem}_pred.png'
    w, h = Image.open(fn).size
    mask = np.array(Image.open(pred['mask']))
    codes = list(mask_codes(dls))
    assert mask.shape == (h, w)
    assert set(pred['shares']) == {codes[i] for i in np.unique(mask)}                   # every class in the written mask, no other
    assert all(v == pytest.approx((mask == codes.index(c)).mean(), abs=1e-4) for c, v in pred['shares'].items())
    with learn.no_bar(): again = problem.predict(learn, fn, out=out)
    assert Path(again['mask']).name == f'{fn.stem}_pred_1.png'         # never over an existing file
    with learn.no_bar(): upload = problem.predict(learn, Image.open(fn).convert('RGBA'), out=out)   # decoded, as serve passes it
    assert Path(upload['mask']).name == 'upload_pred.png' and np.array_equal(np.array(Image.open(upload['mask'])), mask)
    monkeypatch.chdir(tmp_path)
    with learn.no_bar(): here = problem.predict(learn, fn)             # no folder given: the current one
    assert Path(here['mask']).resolve() == (tmp_path/f'{fn.stem}_pred.png').resolve()
    assert not hasattr(problem, 'out_dir')
    with learn.no_bar(): assert problem.plots(learn, tmp_path) == {}
    assert (tmp_path/'show_results.png').is_file()

def test_save_new_png_never_overwrites_under_concurrency(tmp_path):
    "Eight writers at once, one name: eight files, none lost."
    im = Image.new('L', (4, 3))
    names = []
    threads = [threading.Thread(target=lambda: names.append(save_new_png(im, tmp_path, 'frame'))) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert len(set(names)) == 8 and sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in names)

# --- the pretrained path (stand-in weights: this tests code, not accuracy)

def test_pretrained_unet_frozen_and_normalised_at_both_sizes(camvid_cut, tmp_path, pretrained_weights):
    "The lesson's two sizes: each `DataLoaders` carries exactly one ImageNet `Normalize`; the new learner loads the first's weights."
    set_seed(0)
    root = camvid_cut(6)
    learn = problem.learner(problem.dls(root, size=32, bs=2, num_workers=0), 'resnet18', pretrained=True)
    assert learn.pretrained is True and any(not p.requires_grad for p in learn.model[0].parameters())
    learn.path = tmp_path
    learn.save('stage-2')
    big = problem.learner(problem.dls(root, size=48, bs=2, num_workers=0), 'resnet18', pretrained=True)
    big.path = tmp_path
    big.load('stage-2')
    for dls in (learn.dls, big.dls):
        norms = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
        assert len(norms) == 1 and np.allclose(norms[0].mean.flatten(), imagenet_stats[0])
    state, loaded = learn.model.state_dict(), big.model.state_dict()
    assert all(np.array_equal(state[k].cpu(), loaded[k].cpu()) for k in state)

# --- a subset of the frames

def test_subset_keeps_validation_frames(camvid_cut):
    "`n_items` on a dataset with valid.txt: the subset keeps valid.txt's share of frames, one at least, for every seed."
    root = camvid_cut(10, valid=slice(8, 10))
    for seed in range(10):
        dls = camvid_dls(root, size=(32, 48), bs=2, n_items=5, seed=seed, num_workers=0)
        assert (len(dls.train_ds), len(dls.valid_ds)) == (4, 1), seed
        assert {f.name for f in dls.valid_ds.items} <= {f.name for f in frames(root)[8:10]}
