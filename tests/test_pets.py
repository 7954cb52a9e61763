"Tests of the installed `visioncourse.pets`: labels from file names, the data pipeline, cross-entropy from scratch."
import shutil
import pytest, torch
import torch.nn.functional as F
from visioncourse.data import dataset_path
from visioncourse.pets import (pet_label, pets_block, pets_dls, softmax, log_softmax, nll_loss, cross_entropy,
                               PetsProblem, problem)

IMAGES = dataset_path('pets')/'images'

@pytest.fixture
def few_pets(tmp_path):
    "A folder with copies of 4 images each of 3 breeds (a cat, a one-word and a multi-word dog breed)."
    for breed in ['Abyssinian', 'beagle', 'great_pyrenees']:
        for f in sorted(IMAGES.glob(f'{breed}_*.jpg'))[:4]: shutil.copy(f, tmp_path/f.name)
    return tmp_path

# --- pet_label ---

@pytest.mark.parametrize('name,breed', [
    ('great_pyrenees_12.jpg', 'great_pyrenees'), ('american_pit_bull_terrier_3.jpg', 'american_pit_bull_terrier'),
    ('Abyssinian_101.jpg', 'Abyssinian'), ('British_Shorthair_5.jpg', 'British_Shorthair'),
    ('/data/images/staffordshire_bull_terrier_131.jpg', 'staffordshire_bull_terrier'), ('beagle_1.JPG', 'beagle')])
def test_pet_label(name, breed):
    assert pet_label(name) == breed

def test_pet_label_on_every_dataset_file():
    labels = [pet_label(f) for f in IMAGES.glob('*.jpg')]
    assert len(labels) == len(list(IMAGES.glob('*.jpg'))) and len(set(labels)) == 37

@pytest.mark.parametrize('name', ['beagle.jpg', 'great_pyrenees_.jpg', '_12.jpg', 'beagle_12.png', 'notes.txt', ''])
def test_pet_label_bad_name_names_the_file(name):
    with pytest.raises(ValueError, match="Cannot read a breed from the file name of"):
        pet_label('some/folder/' + name)

# --- pets_block / pets_dls ---

def test_pets_dls_on_the_dataset_finds_37_breeds():
    dls = pets_dls(IMAGES, size=32, presize=48, bs=8, num_workers=0)
    assert len(dls.vocab) == 37 and 'great_pyrenees' in dls.vocab and 'Abyssinian' in dls.vocab
    n = len(list(IMAGES.glob('*.jpg')))
    assert len(dls.valid_ds) == int(0.2*n) and len(dls.train_ds) == n - int(0.2*n)

def test_pets_dls_batch_and_seed(few_pets):
    dls = pets_dls(few_pets, size=32, presize=48, bs=4, num_workers=0)
    assert list(dls.vocab) == ['Abyssinian', 'beagle', 'great_pyrenees']
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 3, 32, 32) and yb.shape == (4,)
    again = pets_dls(few_pets, size=32, presize=48, bs=4, num_workers=0)
    assert again.valid_ds.items == dls.valid_ds.items
    other = pets_dls(few_pets, size=32, presize=48, bs=4, seed=1, num_workers=0)
    assert other.valid_ds.items != dls.valid_ds.items

def test_pets_block_pieces():
    blk = pets_block(size=32, presize=48)
    assert blk.get_y is pet_label
    assert any(type(t).__name__ == 'RandomResizedCropGPU' for t in blk.batch_tfms)
    # with min_scale, the composed affine transform samples at the presized size; the crop brings it to `size`
    assert [t for t in blk.batch_tfms if type(t).__name__ == 'Flip'][0].size is None

def test_presize_smaller_than_size_is_an_error():
    with pytest.raises(ValueError, match=r'presize \(100\) must be at least size \(224\)'):
        pets_dls(IMAGES, size=224, presize=100)

def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='is not a folder'): pets_dls(tmp_path/'nowhere')
    with pytest.raises(FileNotFoundError, match='no image files in'): pets_dls(tmp_path)

def test_badly_named_image_is_named(few_pets):
    shutil.copy(IMAGES/'beagle_143.jpg', few_pets/'my dog.jpg')
    with pytest.raises(ValueError, match='my dog.jpg'):
        pets_dls(few_pets, size=32, presize=48, bs=4, num_workers=0, seed=0)

def test_learner_exports_and_predicts(few_pets, tmp_path):
    from fastai.vision.all import vision_learner, resnet18, load_learner
    dls = pets_dls(few_pets, size=32, presize=48, bs=4, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False)
    learn.export(tmp_path/'pets.pkl')
    breed, idx, probs = load_learner(tmp_path/'pets.pkl').predict(few_pets/sorted(f.name for f in few_pets.glob('*.jpg'))[0])
    assert breed in dls.vocab and probs.shape == (3,) and abs(probs.sum().item() - 1) < 1e-5

# --- cross-entropy from scratch, against PyTorch ---

def activations(shape, kind):
    x = torch.randn(shape)
    return {'normal': x, 'scaled': x*1000, 'plus': x + 1000, 'minus': x - 1000}[kind]

def assert_matches(ours, theirs):
    assert torch.isfinite(ours).all()
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * max(1., theirs.abs().max().item()))

KINDS = ['normal', 'scaled', 'plus', 'minus']

@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('shape', [(10,), (1, 5), (6, 2), (64, 37), (3, 4, 5)])
def test_softmax_and_log_softmax_match_pytorch(shape, kind):
    torch.manual_seed(0)
    x = activations(shape, kind)
    assert_matches(softmax(x), F.softmax(x, dim=-1))
    assert_matches(log_softmax(x), F.log_softmax(x, dim=-1))

@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('n,c', [(1, 5), (6, 2), (64, 37)])
def test_losses_match_pytorch(n, c, kind, reduction):
    torch.manual_seed(0)
    x, t = activations((n, c), kind), torch.randint(0, c, (n,))
    assert_matches(nll_loss(x, t, reduction=reduction), F.nll_loss(x, t, reduction=reduction))
    assert_matches(cross_entropy(x, t, reduction=reduction), F.cross_entropy(x, t, reduction=reduction))

def test_default_reduction_is_mean():
    x, t = torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert_matches(cross_entropy(x, t), F.cross_entropy(x, t))
    assert_matches(nll_loss(x, t), F.nll_loss(x, t))

def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    x, t = torch.randn(5, 4, requires_grad=True), torch.tensor([0, 3, 1, 1, 2])
    cross_entropy(x, t, reduction='sum').backward()
    assert_matches(x.grad, softmax(x.detach()) - F.one_hot(t, 4))

@pytest.mark.parametrize('fn', [nll_loss, cross_entropy])
def test_bad_input(fn):
    x, t = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    with pytest.raises(ValueError, match="Unknown reduction 'average'"): fn(x, t, reduction='average')
    with pytest.raises(ValueError, match=r'targ must have shape \(6,\)'): fn(x, t[:4])
    with pytest.raises(ValueError, match='inp must be 2-D'): fn(x[0], t)
    with pytest.raises(ValueError, match='integer class indices'): fn(x, t.float())
    with pytest.raises(ValueError, match=r'class indices in \[0, 2\)'): fn(x, t + 1)

# --- the command-line problem ---

def test_problem_is_registered():
    from visioncourse.problems import get_problem
    assert get_problem('pets') is problem and isinstance(problem, PetsProblem)
    assert (problem.name, problem.dataset, problem.arch, problem.size) == ('pets', 'pets', 'resnet34', 224)

@pytest.fixture
def pets_root(few_pets, tmp_path_factory):
    "A dataset root in the pets layout: the few images under images/."
    root = tmp_path_factory.mktemp('root'); (root/'images').mkdir()
    for f in few_pets.glob('*.jpg'): shutil.copy(f, root/'images'/f.name)
    return root

def test_problem_files_and_count(pets_root):
    assert problem.count(pets_root) == '12 images'
    assert sorted(f.name for f in problem.files(pets_root)) == sorted(f.name for f in (pets_root/'images').iterdir())

def test_problem_train_predict_plots(pets_root, tmp_path):
    dls = problem.dls(pets_root, size=32, bs=4, num_workers=0)
    resize = [t for t in dls.train.after_item.fs if type(t).__name__ == 'Resize'][0]
    assert resize.size == (65, 65)          # presized in the book's ratio: int(32*460/224)
    learn = problem.learner(dls, 'resnet18', pretrained=False)
    assert [m.name for m in learn.metrics] == ['error_rate', 'accuracy']
    fn = sorted((pets_root/'images').iterdir())[0]
    with learn.no_bar():
        pred = problem.predict(learn, fn)
        assert problem.plots(learn, tmp_path) == {} and (tmp_path/'confusion_matrix.png').stat().st_size > 0
    assert set(pred) == {'label', 'probability', 'probs'} and set(pred['probs']) == {'Abyssinian', 'beagle', 'great_pyrenees'}
    assert abs(sum(pred['probs'].values()) - 1) < 1e-4 and pred['probability'] == max(pred['probs'].values())
    assert pred['label'] == max(pred['probs'], key=pred['probs'].get)

def test_problem_describe():
    assert problem.describe('x.jpg', dict(label='beagle', probability=0.25, probs={})) == 'x.jpg: beagle (0.250)'
