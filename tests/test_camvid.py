"""Tests of the installed `visioncourse.camvid` that a notebook does less well: bad datasets on disk (masks, codes.txt,
valid.txt), the full CamVid layout, the command-line `CamvidProblem` (files, learner, masks written into the folder it
is given and never over a file), and the pretrained U-Net. The metric, the label function and `class_shares` are tested
beside their code in 06_camvid."""
import json, os, re, shutil, threading
from pathlib import Path
from unittest import mock
import numpy as np, pytest, torch
from PIL import Image
from fastai.vision.all import get_image_files, Normalize, imagenet_stats, set_seed
from visioncourse.data import dataset_path, count_items
from visioncourse.camvid import camvid_codes, mask_file, camvid_dls, check_camvid, mask_codes, save_new_png, problem, CamvidProblem

CAMVID = dataset_path('camvid_tiny')
FNAMES = get_image_files(CAMVID/'images')

def small_copy(tmp, n=3, valid=None):
    "A CamVid root in `tmp` with the first `n` frames, their masks, codes.txt and optionally valid.txt listing `valid`."
    (tmp/'images').mkdir(parents=True); (tmp/'labels').mkdir()
    shutil.copy(CAMVID/'codes.txt', tmp)
    for f in FNAMES[:n]: shutil.copy(f, tmp/'images'); shutil.copy(mask_file(f), tmp/'labels')
    if valid is not None: (tmp/'valid.txt').write_text(''.join(f'{v}\n' for v in valid))
    return tmp

# --- bad input: one line naming the file, before any training

def test_sample_passes_check():
    assert check_camvid(CAMVID) == FNAMES

def test_image_without_mask(tmp_path):
    root = small_copy(tmp_path)
    mask_file(root/'images'/FNAMES[1].name).unlink()
    with pytest.raises(FileNotFoundError, match=f'{FNAMES[1].name}: no mask'): problem.check(root)

def test_mask_of_other_size(tmp_path):
    root = small_copy(tmp_path)
    m = mask_file(root/'images'/FNAMES[2].name)
    w, h = Image.open(m).size
    Image.open(m).resize((w//2, h//2), Image.NEAREST).save(m)
    with pytest.raises(ValueError, match=f'{FNAMES[2].stem}_P.png: mask is {w//2}x{h//2} but its image is {w}x{h}'):
        problem.check(root)

def test_mask_values_outside_codes(tmp_path):
    root = small_copy(tmp_path)
    m = mask_file(root/'images'/FNAMES[0].name)
    n = len(camvid_codes(CAMVID))
    a = np.array(Image.open(m)); a[0, 0] = n; Image.fromarray(a).save(m)
    with pytest.raises(ValueError, match=rf'{FNAMES[0].stem}_P.png: class number\(s\) {n} not in codes.txt'): problem.check(root)

def test_codes_missing(tmp_path):
    root = small_copy(tmp_path); (root/'codes.txt').unlink()
    with pytest.raises(FileNotFoundError, match='codes.txt: file not found'): check_camvid(root)

def test_valid_txt_naming_a_missing_frame_fails_in_check(tmp_path):
    "A missing frame in valid.txt is one line naming valid.txt and the frame, before training (else an epoch trains, then an empty validation set stops the run)."
    root = small_copy(tmp_path, 4, valid=[FNAMES[1].name, 'no_such_frame.png'])
    with pytest.raises(FileNotFoundError) as e: problem.check(root)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(str(root/'valid.txt')) and "'no_such_frame.png'" in msg

def test_valid_txt_name_with_a_stray_space_is_named(tmp_path):
    root = small_copy(tmp_path, 4)
    (root/'valid.txt').write_text(f'{FNAMES[1].name} \n')               # FileSplitter would match no frame
    with pytest.raises(FileNotFoundError, match=rf"valid.txt: 1 listed frame\(s\) not in .*'{FNAMES[1].name} '"): problem.check(root)

def test_valid_txt_with_windows_line_ends_passes(tmp_path):
    "`Path.read_text` (FileSplitter's reader) turns \\r\\n into \\n, so these names match."
    root = small_copy(tmp_path, 4)
    (root/'valid.txt').write_bytes(f'{FNAMES[1].name}\r\n'.encode())
    assert check_camvid(root) == get_image_files(root/'images')

@pytest.mark.parametrize('valid, message', [([], 'lists no frame'), (None, 'lists every frame')])
def test_valid_txt_leaving_an_empty_set(tmp_path, valid, message):
    root = small_copy(tmp_path, 3, valid=[f.name for f in FNAMES[:3]] if valid is None else valid)
    with pytest.raises(ValueError, match=f'valid.txt: {message}'): check_camvid(root)

def test_full_layout_uses_valid_txt(tmp_path):
    root = small_copy(tmp_path, 5, valid=[f.name for f in FNAMES[3:5]])
    assert check_camvid(root) == get_image_files(root/'images')
    dls = camvid_dls(root, size=(48, 64), bs=2, num_workers=0)
    assert sorted(f.name for f in dls.valid_ds.items) == sorted(f.name for f in FNAMES[3:5])
    assert len(dls.train_ds) == 3
    xb, yb = dls.one_batch()
    assert xb.shape[1:] == (3, 48, 64) and yb.shape[1:] == (48, 64)
    assert problem.files(root)[:2] == [root/'codes.txt', root/'valid.txt']

# --- the command-line problem

def test_problem_attributes():
    assert isinstance(problem, CamvidProblem) and not hasattr(problem, 'out_dir')
    assert (problem.name, problem.dataset, problem.arch, problem.size) == ('camvid', 'camvid_tiny', 'resnet34', 96)
    assert count_items(problem.dataset, CAMVID) == f'{len(FNAMES)} frames, {len(camvid_codes(CAMVID))} classes'
    assert len(problem.check(CAMVID)) == 1 + 2*len(FNAMES)
    assert (problem.describe('x.png', dict(mask='out/x_pred.png', shares={'Road': 0.41, 'Sky': 0.2, 'Car': 0.1}))
            == 'x.png: mask written to out/x_pred.png; Road 41%, Sky 20%, Car 10%')

def test_problem_learner_predict_plots(tmp_path, monkeypatch):
    root = small_copy(tmp_path/'data', 6)
    dls = problem.dls(root, size=48, bs=2, num_workers=0)
    assert dls.one_batch()[0].shape[-2:] == (48, 64)
    learn = problem.learner(dls, 'resnet18', pretrained=False)
    learn.path = tmp_path
    assert list(mask_codes(dls)) == list(camvid_codes(CAMVID)) and learn.metrics[0].name == 'acc_camvid'
    fn = root/'images'/FNAMES[0].name
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

def test_pretrained_unet_frozen_and_normalised_at_both_sizes(tmp_path, pretrained_weights):
    "The lesson's two sizes: each `DataLoaders` carries exactly one ImageNet `Normalize`; the new learner loads the first's weights."
    set_seed(0)
    root = small_copy(tmp_path/'data', 6)
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

# --- the sizes 06's cells use, with a GPU present and absent (issue 26: quick means the quick sizes on any device)

NB06 = Path(os.environ.get('VISIONCOURSE_NB06', Path(__file__).parents[1]/'nbs'/'06_camvid.ipynb'))

def fake_gpu(monkeypatch, free_mib):
    "Make PyTorch report a CUDA GPU with `free_mib` MiB free, while fastai keeps every tensor on the CPU."
    import fastai.torch_core
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: None)
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda *a: (free_mib*2**20, 141*2**30))
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'fake GPU')
    monkeypatch.setattr(fastai.torch_core.defaults, 'use_cuda', False)

def finder_points(num_it, n_batches):
    "How many (lr, loss) points fastai 2.8.7's `lr_find(num_it=num_it)` hands its suggestion functions, on `n_batches` batches an epoch."
    # fastai/callback/schedule.py: lr_find fits num_it//n_batches + 1 epochs (line 294), LRFinder stops after max(num_it, 6)
    # iterations (line 177), and the suggestions see recorder.lrs[num_it//10:-5] (line 298): valley needs one at least.
    iters = min(max(num_it, 6), (num_it//n_batches + 1)*n_batches) if n_batches else 0
    return len(range(iters)[num_it//10:-5])

def lesson_sizes(monkeypatch, quick, free_mib=None):
    "Run 06's code cells up to the first that trains (`free_mib`: a fake GPU, None: none); what that cell and `learn` would use."
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    monkeypatch.setenv('VISIONCOURSE_QUICK', '1' if quick else '0')
    if free_mib is not None: fake_gpu(monkeypatch, free_mib)
    monkeypatch.chdir(NB06.parent)
    cells = [c.source for c in read_nb(NB06).cells if c.cell_type == 'code' and 'nbdev_export(' not in c.source]
    first = next(i for i, src in enumerate(cells) if re.search(r'\.(lr_find|fit_one_cycle|fine_tune|fit)\(', src))
    shell = CaptureShell(NB06)
    try:
        for src in cells[:first]:
            res = shell.run_cell(src)
            if res.exception is not None: raise res.exception
        ns = shell.user_ns
        call = re.search(r'\.lr_find\((.*)\)', cells[first])
        assert call, f"the first cell that trains is not the finder:\n{cells[first]}"
        kwargs = eval(f'(lambda **kw: kw)({call.group(1)})', ns)
        num_it, dls = kwargs.get('num_it', 100), ns['learn'].dls                   # 100: lr_find's default
        return dict(bs=dls.train.bs, frames=len(dls.train_ds) + len(dls.valid_ds), batches=len(dls.train), num_it=num_it,
                    kept=finder_points(num_it, len(dls.train)), s_bs=ns['s'].bs)
    finally:
        if 'work' in shell.user_ns: shutil.rmtree(shell.user_ns['work'], ignore_errors=True)

def test_quick_settings_are_the_same_with_a_gpu(monkeypatch):
    "Issue 26: on 17941e6's 06 a GPU made the quick main line take batches of 8: one batch, 4 finder iterations, none kept."
    with monkeypatch.context() as m: cpu = lesson_sizes(m, quick=True)
    with monkeypatch.context() as m: gpu = lesson_sizes(m, quick=True, free_mib=80_000)
    for where, got in [('without a GPU', cpu), ('with a GPU', gpu)]:
        assert got['batches'] >= 1, f"quick settings {where}: no training batch: {got}"
        assert got['kept'] >= 1, f"quick settings {where}: lr_find(num_it={got['num_it']}) keeps no point for its suggestion: {got}"
        assert got['bs'] == got['s_bs'], f"quick settings {where}: the DataLoaders' batch size is not the settings' bs: {got}"
    assert gpu == cpu, f"quick settings differ with a GPU: {gpu} against {cpu} without one"

@pytest.mark.parametrize('free_mib, bs', [(None, 4), (80_000, 8), (4_000, 4)])
def test_book_settings_batch_size_by_gpu_memory(monkeypatch, free_mib, bs):
    "The lesson's rule at the book's settings: batches of 8 with more than 8,200 MB of GPU memory free, else 4."
    got = lesson_sizes(monkeypatch, quick=False, free_mib=free_mib)
    assert (got['bs'], got['s_bs']) == (bs, bs), got
    assert got['batches'] >= 1 and got['kept'] >= 1, got

@pytest.mark.parametrize('n_batches, num_it', [(1, 4), (2, 4), (1, 12), (2, 12), (3, 23)])
def test_finder_points_match_fastai(tmp_path, n_batches, num_it):
    "`finder_points` against a real `lr_find` on a one-weight model: the points fastai keeps for its suggestions."
    from torch import nn
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import MSELossFlat
    ds = [(torch.randn(1), torch.randn(1)) for _ in range(2*n_batches)]
    learn = Learner(DataLoaders.from_dsets(ds, ds, bs=2, device='cpu'), nn.Linear(1, 1), loss_func=MSELossFlat(), path=tmp_path)
    with learn.no_bar(): learn.lr_find(num_it=num_it, stop_div=False, show_plot=False, suggest_funcs=None)
    assert len(learn.recorder.lrs[num_it//10:-5]) == finder_points(num_it, n_batches)

def test_subset_keeps_validation_frames(tmp_path):
    "`n_items` on a dataset with valid.txt: the subset keeps valid.txt's share of frames, one at least, for every seed."
    root = small_copy(tmp_path, 10, valid=[f.name for f in FNAMES[8:10]])
    for seed in range(10):
        dls = camvid_dls(root, size=(32, 48), bs=2, n_items=5, seed=seed, num_workers=0)
        assert (len(dls.train_ds), len(dls.valid_ds)) == (4, 1), seed
        assert {f.name for f in dls.valid_ds.items} <= {f.name for f in FNAMES[8:10]}
