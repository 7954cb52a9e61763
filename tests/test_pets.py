"""File-system tests of `visioncourse.pets`: folders of images the lesson's pipeline and `PetsProblem` read and write.

The labelling function, the `DataBlock`, the losses against PyTorch, bad input to the losses, export and prediction,
and the registry are tested in nbs/01_pets.ipynb, beside the code (`nbdev_test`)."""
import json, os, shutil
from pathlib import Path
from unittest import mock
import pytest
from PIL import Image
from visioncourse.data import count_items
from visioncourse.pets import pets_dls, problem

BREEDS = ['Abyssinian', 'beagle', 'great_pyrenees']   # a cat, a one-word and a multi-word dog breed

@pytest.fixture
def pets_root(data_cut):
    "A cut of pets in its layout (conftest's `data_cut`): the first 4 images of each of `BREEDS` under images/."
    return data_cut('pets', 4, breeds=BREEDS)

@pytest.fixture
def few_pets(pets_root):
    "The cut's folder of images."
    return pets_root/'images'

def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='is not a folder'): pets_dls(tmp_path/'nowhere')
    with pytest.raises(FileNotFoundError, match='no image files in'): pets_dls(tmp_path)

def test_badly_named_image_is_named(few_pets):
    shutil.copy(sorted(few_pets.glob('beagle_*.jpg'))[0], few_pets/'my dog.jpg')
    with pytest.raises(ValueError, match='my dog.jpg'):
        pets_dls(few_pets, size=32, presize=48, bs=4, num_workers=0, seed=0)

def test_folder_of_three_breeds(few_pets):
    dls = pets_dls(few_pets, size=32, presize=48, bs=4, num_workers=0)
    n = len(list(few_pets.iterdir()))
    assert list(dls.vocab) == BREEDS   # sorted: capitals first
    assert len(dls.train_ds) + len(dls.valid_ds) == n and len(dls.valid_ds) == int(0.2*n)   # the lesson's valid_pct=0.2
    assert dls.one_batch()[0].shape == (4, 3, 32, 32)

def test_problem_files_and_count(pets_root):
    assert count_items('pets', pets_root) == f"{len(list((pets_root/'images').iterdir()))} images"
    assert sorted(f.name for f in problem.files(pets_root)) == sorted(f.name for f in (pets_root/'images').iterdir())

def test_problem_train_predict_plots(pets_root, tmp_path):
    dls = problem.dls(pets_root, size=32, bs=4, num_workers=0)
    resize = [t for t in dls.train.after_item.fs if type(t).__name__ == 'Resize'][0]
    assert resize.size == (65, 65)          # presized in the book's ratio: int(32*460/224)
    learn = problem.learner(dls, 'resnet18', pretrained=False)
    assert [m.name for m in learn.metrics] == ['error_rate', 'accuracy']
    fn = sorted((pets_root/'images').iterdir())[0]
    out = tmp_path/'out'; out.mkdir()
    with learn.no_bar():
        pred = problem.predict(learn, fn)
        with Image.open(fn) as im: pred_pil = problem.predict(learn, im.convert('RGB'), out=out)  # decoded, as serve passes it
        assert problem.plots(learn, out) == {}
    assert [f.name for f in out.iterdir()] == ['confusion_matrix.png'] and (out/'confusion_matrix.png').stat().st_size > 0
    with Image.open(out/'confusion_matrix.png') as im: assert im.width <= 12*72 + 100   # saved small (save_fig's dpi)
    assert set(pred) == {'label', 'probability', 'probs'} and set(pred['probs']) == set(BREEDS)
    assert pred['label'] == max(pred['probs'], key=pred['probs'].get)   # our dict maps the vocabulary to its probabilities
    assert pred_pil['label'] == pred['label'] and abs(pred_pil['probability'] - pred['probability']) < 1e-5

# --- the lesson's settings: what tests/test_lesson_settings.py does not check for every lesson (there: quick is the
# same on any device, a training batch on the sample and the full dataset, enough points for every lr_find)

NB = Path(__file__).resolve().parents[1]/'nbs'/'01_pets.ipynb'

def code_cells():
    "The source of every code cell of nbs/01_pets.ipynb."
    return [''.join(c['source']) for c in json.loads(NB.read_text())['cells'] if c['cell_type'] == 'code']

def lesson_settings(book, gpu):
    "The notebook's `s` (settings cell) and `g` (its GPU cells' `gpu_settings`) at book or quick settings, with or without a GPU."
    import visioncourse.settings as vs
    from fastai.vision.all import resnet18, resnet34, resnet50
    cells = code_cells()
    settings_cell = next(c for c in cells if 's = Settings(' in c)
    gpu_cell = next(c for c in cells if 'g = gpu_settings(' in c)
    ns = dict(Settings=vs.Settings, gpu_settings=vs.gpu_settings, setup_notebook=lambda: None,
              weights_available=lambda arch: False, resnet18=resnet18, resnet34=resnet34, resnet50=resnet50)
    env = {'VISIONCOURSE_QUICK': '0' if book else '1', 'VISIONCOURSE_REHEARSAL': '1'}
    with mock.patch.object(vs, 'has_cuda', lambda: gpu), mock.patch.dict(os.environ, env):
        for var in ('VISIONCOURSE_GPU_BS_SCALE', 'VISIONCOURSE_WORKERS'): os.environ.pop(var, None)
        exec(settings_cell, ns)
        exec(gpu_cell, ns)
    return ns['s'], ns['g']

def training_images(n):
    "How many of `n` images the lesson's `RandomSplitter` (valid_pct=0.2) leaves for training."
    return n - int(0.2*n)

@pytest.mark.parametrize('book', [False, True], ids=['quick', 'book'])
@pytest.mark.parametrize('gpu', [False, True], ids=['cpu', 'gpu'])
def test_settings_presize_and_smallest_cut(book, gpu):
    "The book's presizing (never below the size), and a training batch on the smallest cut the course documents."
    s, g = lesson_settings(book, gpu)
    assert s.mode == ('book' if book else 'quick') and s.presize >= s.size and g.presize >= g.size
    for bs in (s.bs, g.bs):   # 3 photos of each of the full dataset's 37 breeds (tools/cut_data.py --pets-per-breed 3)
        assert training_images(37*3)//bs >= 1, f"{37*3} images, bs={bs}: no full training batch"

def test_main_line_uses_the_books_calls():
    cells = [c for c in code_cells() if '#| cuda' not in c and '#| export' not in c]
    main = cells[:next(i for i, c in enumerate(cells) if 'PET_BREEDS = [' in c)]   # up to the appendix
    learners = [c for c in main if 'vision_learner(' in c]
    assert learners and all('pretrained=s.pretrained' in c for c in learners)
    for plumbing in ('course_learner', 'finder_iters', 'epochs(', 'gpu_present', 'path=work', 'working_directory'):
        assert not any(plumbing in c for c in main), plumbing
