"""The pretrained path, offline: what an online learner's run does with ImageNet and WikiText-103 weights, run here on
random stand-ins saved under the names torchvision and fastai load (`pretrained_weights` in conftest.py). Random
weights test the code (loading, the frozen epoch, unfreezing, discriminative rates, normalisation), never accuracy.
`pytest -k pretrained` selects these tests. `FitProbe` (fit_probe.py) records what each fit did."""
import json, os, warnings
import pytest, torch
from fastai.vision.all import imagenet_stats, SigmoidRange
from visioncourse.data import dataset_path
from helpers import run_cli, standin_weights, imagenet_checkpoint, IMAGENET_ARCHS, WT103_VOCAB, WT103_FILES
from fit_probe import probing, RUN

pytestmark = pytest.mark.slow

warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
FALLBACK = 'random weights'   # the line the course prints when it falls back (visioncourse.learner)
IMAGENET = [list(s) for s in imagenet_stats]
ENV = tuple(os.environ.get(k) for k in ('TORCH_HOME', 'FASTAI_HOME'))   # before any test here

@pytest.fixture(autouse=True)
def _forget_the_probe():
    "Let go of the probe's records (weights snapshots, hundreds of MB for the AWD_LSTM) after each test."
    yield
    RUN.fits.clear(); RUN.batches.clear(); RUN.first.clear(); RUN.last.clear()

# --- what the checks share ---

def standin_body(torch_home, arch='resnet18'):
    "The stand-in's parameters for `arch`, in order, without ImageNet's classifier (`fc`): what a pretrained body starts from."
    sd = torch.load(torch_home/'hub'/'checkpoints'/imagenet_checkpoint(arch), weights_only=True)
    import torchvision
    names = [n for n, _ in getattr(torchvision.models, arch)(weights=None).named_parameters() if not n.startswith('fc.')]
    return [sd[n] for n in names]

def fits_of(run, learner=None, finder=False):
    "The recorded fits that trained `learner` (default: the first learner made), without (or only) the finder's."
    learner = run.first[0][0] if learner is None else learner
    return [f for f in run.fits if f['learner'] == learner and f['finder'] == finder and f['trained']]

def body_and_head(fit):
    "Parameter names of the body (every group but the last) and of the head (the last group), body norm layers apart."
    last = fit['n_groups'] - 1
    body = [n for n, g in fit['group'].items() if g < last]
    return ([n for n in body if n not in fit['norm_params']], [n for n in body if n in fit['norm_params']],
            [n for n, g in fit['group'].items() if g == last])

def assert_frozen_fit(fit):
    "A fit with the body frozen: its weights untrainable and unchanged (its norm layers train: `train_bn`), the head changed."
    body, body_norm, head = body_and_head(fit)
    assert body and head and body_norm
    assert not any(fit['trainable'][n] for n in body) and all(fit['trainable'][n] for n in head + body_norm)
    assert not fit['changed'] & set(body), sorted(fit['changed'] & set(body))[:5]
    assert set(head) <= fit['changed'], sorted(set(head) - fit['changed'])[:5]
    assert fit['changed'] & set(body_norm)

def assert_rates(fit, top, ratios):
    "The last group's rate is `top` at the first training batch; the groups' rates relative to it are `ratios` at every batch."
    assert fit['lrs'] and fit['lrs'][0][-1] == pytest.approx(top, rel=1e-6)
    for lrs in fit['lrs']: assert [lr/lrs[-1] for lr in lrs] == pytest.approx(ratios, rel=1e-6)

def assert_fine_tune(run, torch_home, lr, arch='resnet18'):
    """`fine_tune(1, lr)` on a pretrained body: it starts from the stand-in, trains one epoch frozen at `slice(lr)`, then
    one unfrozen at `slice(lr/2/100, lr/2)` (fastai/callback/schedule.py: `base_lr /= 2`, `lr_mult=100`, `div=5`)."""
    key, _, start = run.first[0]
    frozen, unfrozen = fits_of(run, key)
    standin = standin_body(torch_home, arch)
    body = [n for n in frozen['group'] if frozen['group'][n] < frozen['n_groups'] - 1]
    assert len(body) == len(standin) and all(torch.equal(start[n], t) for n, t in zip(body, standin))
    # and so does fine_tune, after the finder (which restores the weights it found)
    assert [frozen['start_sums'][n] for n in body] == [t.double().sum().item() for t in standin]
    assert frozen['n_groups'] == 3 and all(f['n_epoch'] == 1 for f in (frozen, unfrozen))
    assert_frozen_fit(frozen)
    assert_rates(frozen, lr/25, [0.1, 0.1, 1])        # slice(lr): lr/10 for the (frozen) body; one-cycle from lr/div, div=25
    assert all(unfrozen['trainable'].values()) and set(unfrozen['trainable']) == unfrozen['changed']
    assert_rates(unfrozen, lr/2/5, [0.01, 0.1, 1])     # slice(lr/200, lr/2) over 3 groups; one-cycle from lr/2/div, div=5

def assert_normalized(run, learner=None):
    "Every batch the learner saw (training, validation, the finder's, predictions) went through ImageNet `Normalize`."
    learner = run.first[0][0] if learner is None else learner
    batches = [b for b in run.batches if b['learner'] == learner and b['norm'] != 'batches']
    assert batches and any(not b['training'] for b in batches)
    imagenet = [pytest.approx(IMAGENET[0]), pytest.approx(IMAGENET[1])]
    bad = [b for b in batches if b['norm'] is None or list(b['norm']) != imagenet]
    assert not bad, (f"{len(bad)} of {len(batches)} batches not normalised with ImageNet stats, "
                     f"e.g. shape {bad[0]['shape']}: {bad[0]['norm']}")

def train(out, problem, *args):
    "`visioncourse train problem ARGS --out out` in this process, which must succeed on the pretrained path."
    res = run_cli('train', problem, *args, '--workers', '0', '--out', out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert FALLBACK not in res.stdout + res.stderr, res.stdout
    report = json.loads((out/'metrics.json').read_text())
    assert report['settings']['pretrained'] is True
    return res, report

def assert_no_trace(*homes):
    "Outside the stand-ins' block: torch and fastai look where they did before, the course's modules can reach out again."
    import os, sys, torch.hub, visioncourse.data
    from fastai.data.external import fastai_path
    from fastai.torch_core import defaults
    assert (os.environ.get('TORCH_HOME'), os.environ.get('FASTAI_HOME')) == ENV
    assert not any(str(torch.hub.get_dir()).startswith(str(h)) or str(fastai_path('model')).startswith(str(h)) for h in homes)
    assert all(getattr(m, 'can_reach', visioncourse.data.can_reach) is visioncourse.data.can_reach
               for n, m in sys.modules.items() if n.split('.')[0] == 'visioncourse')
    assert not [c for c in defaults.callbacks if c.__name__ == 'FitProbe']

def epoch_lines(res): return [l for l in res.stdout.splitlines() if l.startswith('epoch ')]

# --- the stand-ins themselves ---

def test_pretrained_standins_are_found_and_leave_nothing_behind(standin_torch_home, standin_fastai_home):
    import torch.hub
    from fastai.data.external import fastai_path
    from visioncourse.learner import arch_fn, weights_cached
    from visioncourse.imdb import wt103_cached
    from visioncourse.problems import PROBLEMS, get_problem
    from visioncourse.cli import ARCHS
    hub, models = torch.hub.get_dir(), fastai_path('model')
    with standin_weights(standin_torch_home, standin_fastai_home):
        assert imagenet_checkpoint('resnet18') == 'resnet18-f37072fd.pth'   # ResNet18_Weights.IMAGENET1K_V1's
        assert all(weights_cached(arch_fn(a)) for a in IMAGENET_ARCHS) and wt103_cached()
        image = [get_problem(n) for n in PROBLEMS if get_problem(n).inputs == 'image']
        assert image and {p.arch for p in image} | set(ARCHS) <= set(IMAGENET_ARCHS)   # every body `train` offers has one
        assert torch.hub.get_dir() == str(standin_torch_home/'hub') and fastai_path('model') == standin_fastai_home/'models'
        assert sorted(p.name for p in (standin_fastai_home/'models'/'wt103-fwd').iterdir()) == sorted(WT103_FILES)
    assert (torch.hub.get_dir(), fastai_path('model')) == (hub, models)
    assert_no_trace(standin_torch_home, standin_fastai_home)

# --- image classifier, U-Net, keypoints: `visioncourse train` on the pretrained path ---

def test_train_pets_pretrained(pretrained_weights, pets_small, tmp_path):
    """`fine_tune` from the stand-in: the finder's rate, a frozen epoch, an unfrozen one, every batch normalised, in
    training and in the exported model's predictions."""
    with probing() as run:
        res, report = train(tmp_path/'pets', 'pets', '--data', pets_small, '--epochs', '1', '--size', '32', '--bs', '8',
                            '--arch', 'resnet18')
        fn = sorted(pets_small.glob('images/*.jpg'))[0]
        pred = run_cli('predict', tmp_path/'pets'/'model.pkl', fn)
    assert len(epoch_lines(res)) == 2, res.stdout                       # one frozen epoch, then one unfrozen
    lr = report['settings']['lr']
    assert report['settings']['lr_found'] == lr and fits_of(run, finder=True)   # the finder ran, on the frozen model
    assert all(not any(f['trainable'][n] for n in body_and_head(f)[0]) for f in fits_of(run, finder=True))
    assert_fine_tune(run, pretrained_weights.torch_home, lr)
    assert_normalized(run)
    assert pred.returncode == 0 and str(fn) in pred.stdout, pred.stderr[-2000:]
    loaded = {b['learner'] for b in run.batches} - {run.first[0][0]}   # the exported model, loaded by `predict`
    assert len(loaded) == 1
    assert_normalized(run, loaded.pop())

@pytest.fixture
def camvid_small(data_cut):
    "Twelve CamVid frames and their masks."
    return data_cut('camvid_tiny', 12)

def test_train_camvid_unet_pretrained(pretrained_weights, camvid_small, tmp_path):
    "The U-Net's encoder is the pretrained body: frozen during the first epoch while the decoder trains."
    with probing() as run:
        res, report = train(tmp_path/'camvid', 'camvid', '--data', camvid_small, '--epochs', '1', '--size', '32',
                            '--bs', '4', '--arch', 'resnet18', '--lr', '1e-3')
    assert run.first[0][1] == 'DynamicUnet' and len(epoch_lines(res)) == 2
    assert_fine_tune(run, pretrained_weights.torch_home, 1e-3)
    assert_normalized(run)

def test_train_biwi_keypoints_pretrained(pretrained_weights, tmp_path):
    "A regression head ending in `SigmoidRange(-1, 1)` (`y_range`) on a pretrained body; predictions stay in range."
    from visioncourse.training import load_model
    with probing() as run:
        res, report = train(tmp_path/'biwi', 'biwi', '--epochs', '1', '--size', '32', '--bs', '4', '--arch', 'resnet18',
                            '--lr', '1e-2')
        assert_fine_tune(run, pretrained_weights.torch_home, 1e-2)
        assert_normalized(run)
    learn = load_model(tmp_path/'biwi'/'model.pkl')
    last = learn.model[1][-1]
    assert isinstance(last, SigmoidRange) and (last.low, last.high) == (-1, 1)
    x = torch.randn(4, 3, 24, 32)*100                    # far outside the images' range: the head's linear output is too
    with torch.no_grad(): body, out = learn.model.eval()[0](x), learn.model.eval()(x)
    with torch.no_grad(): assert learn.model[1][:-1](body).abs().max() > 1
    assert out.shape == (4, 2) and out.abs().max() <= 1
    fn = sorted(dataset_path('biwi_head_pose').glob('*/*_rgb.jpg'))[0]
    res = run_cli('predict', tmp_path/'biwi'/'model.pkl', fn)   # the centre in pixels of the 640x480 frame
    x, y = [float(v.split('=')[1]) for v in res.stdout.strip().rsplit('at ', 1)[1].removesuffix(' px').split(', ')]
    assert res.returncode == 0 and 0 <= x <= 640 and 0 <= y <= 480, res.stdout

# --- Planet: progressive resizing keeps the normalisation ---

def test_planet_progressive_resizing_pretrained(pretrained_weights, tmp_path):
    "The lesson's resizing (32 then 48 px here): the learner's new `DataLoaders` are normalised like the first."
    from visioncourse.planet import planet_dls, planet_metrics
    from visioncourse.learner import course_learner
    path = dataset_path('planet_sample')
    with probing() as run:
        dls = planet_dls(path, size=32, bs=8, n_items=24, num_workers=0)
        learn = course_learner(dls, 'resnet18', metrics=planet_metrics(), path=tmp_path)
        assert learn.pretrained
        with learn.no_bar(): learn.fit_one_cycle(1, slice(1e-2))
        learn.dls = planet_dls(path, size=48, bs=8, n_items=24, num_workers=0)   # the lesson's progressive resizing
        learn.freeze()
        with learn.no_bar(): learn.fit_one_cycle(1, slice(1e-2/2))
    small, large = fits_of(run)
    assert_frozen_fit(small); assert_frozen_fit(large)
    sizes = {b['shape'][-1] for b in run.batches}
    assert sizes == {32, 48}, sizes
    assert_normalized(run)

# --- ULMFiT: the language model from the WikiText-103 stand-in, then the classifier on its encoder ---

@pytest.fixture
def imdb_tiny(data_cut):
    "20 reviews of the sample (both splits, in its proportions), each cut to its first 24 words (one classifier batch at bs 16)."
    return data_cut('imdb_sample', 20, words=24)

def test_train_imdb_ulmfit_pretrained(pretrained_weights, imdb_tiny, tmp_path, monkeypatch):
    """The full-size `AWD_LSTM` (the only one WikiText-103 weights fit, so not the quick one) starts from the stand-in,
    its embedding matched to the new vocabulary; the classifier starts from the fine-tuned encoder and unfreezes
    gradually, with rates 2.6 times larger from one group to the next (ULMFiT's factor)."""
    from visioncourse.training import load_model
    monkeypatch.setenv('VISIONCOURSE_QUICK', '0')
    lr = 1e-2
    sd = torch.load(pretrained_weights.fastai_home/'models'/'wt103-fwd'/WT103_FILES[0], weights_only=True)
    with probing() as run:
        res, report = train(tmp_path/'imdb', 'imdb', '--data', imdb_tiny, '--epochs', '1', '--size', '16', '--bs', '16',
                            '--lr', lr)
    assert len(epoch_lines(res)) == 6, res.stdout
    assert report['metrics']['lm_perplexity'] > 0 and report['settings']['lr'] == lr
    (lm, _, lm_start), (clas, _, clas_start) = run.first
    # the language model: the stand-in's LSTM, and its embedding rows moved to the words of the new vocabulary
    vocab = list(load_model(tmp_path/'imdb'/'model.pkl').dls.vocab[0])
    rnns = [n for n in lm_start if '.rnns.' in n]
    assert len(rnns) == 12 and all(torch.equal(lm_start[n], sd[n]) for n in rnns)   # 3 layers x 4 weights and biases
    emb, old = lm_start['0.encoder.weight'], sd['0.encoder.weight']
    shared = [w for w in vocab if w in WT103_VOCAB]
    assert 'the' in shared and len(shared) < len(vocab)
    for i, w in enumerate(vocab):
        assert torch.allclose(emb[i], old[WT103_VOCAB.index(w)] if w in WT103_VOCAB else old.mean(0)), w
    frozen, unfrozen = fits_of(run, lm)
    assert frozen['n_groups'] == 4                                   # three LSTM layers, then embedding and decoder
    assert {n for n, g in frozen['group'].items() if g < 3} == set(rnns)
    assert not any(frozen['trainable'][n] for n in rnns) and not frozen['changed'] & set(rnns)
    assert '0.encoder.weight' in frozen['changed'] and set(unfrozen['trainable']) == unfrozen['changed']
    # the classifier: the fine-tuned encoder, then freeze, freeze_to(-2), freeze_to(-3), unfreeze
    lm_end = run.last[lm]
    encoder = [n for n in clas_start if n.startswith('0.module.')]
    assert len(encoder) == 13                                        # the embedding and the 12 LSTM weights and biases
    for n in encoder: assert torch.equal(clas_start[n], lm_end[n.replace('0.module.', '0.', 1)]), n
    fits = fits_of(run, clas)
    assert [f['n_groups'] for f in fits] == [5]*4
    for f, n_trained, top in zip(fits, [1, 2, 3, 5], [lr/25, lr/2/25, lr/4/25, lr/20/25]):
        trained = {n for n, g in f['group'].items() if g >= 5 - n_trained}
        assert {n for n, t in f['trainable'].items() if t} == trained == f['changed'], n_trained
        assert_rates(f, top, [1]*5 if n_trained == 1 else [2.6**(i - 4) for i in range(5)])

def test_pretrained_stand_ins_leave_no_trace(standin_torch_home, standin_fastai_home):
    "After the tests above (modules first imported while they ran included): nothing of the stand-ins is left."
    assert_no_trace(standin_torch_home, standin_fastai_home)
