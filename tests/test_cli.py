"""The `visioncourse` command: every verb, and bad input, on temporary copies of the sample data (../shared is never
modified). Most tests call the command line in this process (`cli`, from conftest.py); a few run the installed
entry point in a fresh process, where the process itself is the point (exit status, startup without fastai).
Every check holds on any data in the layouts: counts and file names are read from the data, not the samples'."""
import csv, json, os, pickle, shutil, subprocess, sys, types
from pathlib import Path
import pytest
from PIL import Image
from visioncourse.data import dataset_path, DATASETS
from visioncourse.problems import PROBLEMS
from helpers import SMALL, breeds_of_each

EXE = Path(sys.executable).parent/'visioncourse'

def run(*args, **kw):
    "Run the installed `visioncourse` command in a new process."
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, **kw)

def one_line_error(res, *fragments):
    "The command failed with status 2, printing one error line (no traceback) holding each fragment."
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    lines = [l for l in res.stderr.splitlines() if l.startswith('visioncourse: error:')]
    assert len(lines) == 1 and 'Traceback' not in res.stderr, res.stderr
    for f in fragments: assert str(f) in lines[0], (f, lines[0])

@pytest.fixture
def biwi_copy(data_cut):
    "Two frames of each person."
    return data_cut('biwi_head_pose', 2)

@pytest.fixture
def pascal_copy(data_cut):
    "Eight rows of train.csv (both splits), their images, and no test images."
    return data_cut('pascal_2007', 8, n_test=0)

def first_row(csv_file):
    "The first data row of `csv_file`, as a dict."
    with open(csv_file, newline='', encoding='utf-8') as f: return next(csv.DictReader(f))

# --- the real entry point, in a fresh process (fast: fastai is not imported for these) ---

def test_help_lists_verbs_and_problems():
    res = run('--help')
    assert res.returncode == 0 and all(v in res.stdout for v in ('train', 'predict', 'datasets', 'serve'))
    assert all(f"  {name} " in res.stdout for name in PROBLEMS)

def test_invalid_option_in_a_fresh_process(tmp_path):
    one_line_error(run('train', 'pets', '--epochs', '-1', '--out', tmp_path/'out'), '--epochs must be at least 1, got -1')
    one_line_error(run('fit', 'pets'), "unknown verb 'fit'")

def test_debug_shows_traceback(tmp_path):
    res = run('train', 'pets', '--data', tmp_path/'nowhere', '--debug')
    assert res.returncode != 0 and 'Traceback' in res.stderr

def test_checks_import_neither_torch_nor_fastai():
    code = ("import sys, contextlib, io, visioncourse.cli as c\n"
            "with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):\n"
            "    c.main(['--help']); c.main(['predict', '--help']); c.main(['datasets']); c.main(['train', 'pets', '--bs', '0'])\n"
            "print(sorted(m for m in ('torch', 'fastai') if m in sys.modules))")
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip() == '[]'

def test_a_new_problem_needs_only_its_registry_line(cli, pets_small, tmp_path, monkeypatch):
    """The library reads everything about a problem from its registry line and its `Problem`: one registered under a
    new name (the pets lesson's, renamed) trains, exports and predicts with no other change."""
    from visioncourse.pets import PetsProblem
    class Kittens(PetsProblem): name = 'kittens'
    mod = types.ModuleType('visioncourse_kittens'); mod.problem = Kittens()
    monkeypatch.setitem(sys.modules, 'visioncourse_kittens', mod)
    monkeypatch.setitem(PROBLEMS, 'kittens', dict(PROBLEMS['pets'], module='visioncourse_kittens', summary='Kittens'))
    res = cli('train', 'kittens', *SMALL, '--lr', '1e-3', '--data', pets_small, '--out', tmp_path/'k')
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path/'k'/'metrics.json').read_text())['problem'] == 'kittens'
    img = sorted((pets_small/'images').glob('*.jpg'))[0]
    res = cli('predict', tmp_path/'k'/'model.pkl', img)
    assert res.returncode == 0 and res.stdout.startswith(f'{img}: '), res

# --- help and datasets ---

def test_predict_help_warns_about_pickles(cli):
    res = cli('predict', '--help')
    assert res.returncode == 0 and 'only load model files you trust' in res.stdout and '--text' in res.stdout

def test_datasets_lists_every_dataset(cli):
    res = cli('datasets')
    assert res.returncode == 0, res.stderr
    assert [l.split()[0] for l in res.stdout.splitlines()] == list(DATASETS)
    assert '[problem pets]' in res.stdout

def test_datasets_counts_what_is_there(cli, data_cut, tmp_path, monkeypatch):
    """Each count `datasets` prints is the number of items in the folder it names: checked on cuts of the datasets
    whose sizes this test chooses (sizes that hold in any copy of the layout, from the samples to the full datasets)."""
    persons = [d for d in dataset_path('biwi_head_pose').iterdir() if d.is_dir() and any(d.glob('*_rgb.jpg'))]
    n_codes = len((dataset_path('camvid_tiny')/'codes.txt').read_text().split())
    n_breeds = len(set(breeds_of_each((dataset_path('pets')/'images').glob('*.jpg'))))
    cuts = {'pets': (2, f'{2*n_breeds} images'), 'pascal_2007': (5, '5 rows in train.csv'),
            'biwi_head_pose': (1, f'{len(persons)} frames of {len(persons)} persons'),
            'planet_sample': (7, '7 chips in labels.csv'), 'camvid_tiny': (3, f'3 frames, {n_codes} classes'),
            'imdb_sample': (10, '10 reviews (')}
    root = tmp_path/'data'
    for name, (n, _) in cuts.items(): shutil.move(data_cut(name, n), root/name)
    monkeypatch.setenv('VISIONCOURSE_DATA', str(root))
    res = cli('datasets')
    lines = {l.split()[0]: l for l in res.stdout.splitlines()}
    for name, (n, count) in cuts.items():
        assert f'{root/name}  ({count}' in lines[name], (count, lines[name])
    n_valid = sum(r['is_valid'] == 'True' for r in csv.DictReader(open(root/'imdb_sample'/'texts.csv', encoding='utf-8')))
    assert f'10 reviews ({10 - n_valid} train, {n_valid} valid)' in lines['imdb_sample'] and 0 < n_valid < 10

# --- train ---

@pytest.mark.parametrize('problem,plot', [('pets', 'confusion_matrix.png'), ('pascal', 'threshold_sweep.png'),
                                          ('biwi', 'show_results.png')])
def test_train_writes_model_metrics_and_plots(request, problem, plot):
    run = request.getfixturevalue(f'{problem}_run')
    assert {'model.pkl', 'metrics.json', 'show_batch.png', 'lr_find.png', plot} <= {p.name for p in run.out.iterdir()}
    report = json.loads((run.out/'metrics.json').read_text())
    assert report['problem'] == problem and report['settings']['size'] == 32 and report['settings']['pretrained'] is False
    assert report['versions']['fastai'] and report['device'] and report['wall_time_s'] > 0
    assert all(isinstance(v, float) for v in report['metrics'].values())
    assert [p.name for p in run.out.parent.iterdir()] == [problem], 'temporary folders left behind'

def test_log_has_one_line_per_epoch_and_no_bar(pets_run, biwi_run):
    "Output that is not a terminal gets readable lines: fit_one_cycle's one epoch, with its losses, metrics and time."
    for run, metric in [(pets_run, 'error_rate'), (biwi_run, 'pixel_error')]:
        epochs = [l for l in run.log.splitlines() if l.startswith('epoch ')]
        assert len(epochs) == 1 and epochs[0].startswith('epoch 1/1  train_loss '), run.log
        assert f'  {metric} ' in epochs[0] and '  time ' in epochs[0]
        assert '\r' not in run.log and '█' not in run.log

def test_refuses_non_empty_out_without_force(cli, biwi_run):
    before = (biwi_run.out/'metrics.json').read_text()
    one_line_error(cli('train', 'biwi', *SMALL, '--out', biwi_run.out), 'is not empty; use --force')
    assert (biwi_run.out/'metrics.json').read_text() == before

def test_run_failing_after_training_keeps_earlier_result(cli, biwi_run, tmp_path, monkeypatch):
    "A run that breaks while writing its results leaves the earlier --out exactly as it was, and no temporary folder."
    import visioncourse.training
    out = tmp_path/'biwi'; shutil.copytree(biwi_run.out, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    def boom(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(visioncourse.training, 'write_results', boom)
    one_line_error(cli('train', 'biwi', *SMALL, '--lr', '1e-3', '--out', out, '--force'), 'disk full')
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ['biwi'], 'temporary folders left behind'

def test_force_replaces_earlier_result(cli, biwi_run, tmp_path):
    out = tmp_path/'biwi'
    shutil.copytree(biwi_run.out, out)
    (out/'stale.txt').write_text('from an earlier run')
    res = cli('train', 'biwi', *SMALL, '--lr', '1e-3', '--seed', '7', '--valid_person', '1', '--out', out, '--force')
    assert res.returncode == 0, res.stderr[-3000:]
    settings = json.loads((out/'metrics.json').read_text())['settings']   # BIWI's own option reached its `dls`
    assert settings['lr'] == 1e-3 and settings['seed'] == 7 and settings['valid_person'] == '01'
    assert not (out/'stale.txt').exists() and sorted(p.name for p in tmp_path.iterdir()) == ['biwi']

def test_out_inside_a_file(cli, tmp_path):
    (tmp_path/'afile').write_text('x')
    one_line_error(cli('train', 'biwi', *SMALL, '--out', tmp_path/'afile'/'run'), 'cannot create its folder')

@pytest.mark.parametrize('option,value,message', [
    ('--epochs', '-2', '--epochs must be at least 1, got -2'),
    ('--size', '0', '--size must be at least 16 pixels, got 0'),
    ('--arch', 'vgg16', "--arch 'vgg16' is not one of resnet18, resnet34, resnet50"),
    ('--bs', '0', '--bs must be at least 1'),
    ('--epochs', 'many', "argument --epochs: invalid int value: 'many'"),
])
def test_invalid_options(cli, tmp_path, option, value, message):
    one_line_error(cli('train', 'pets', option, value, '--out', tmp_path/'out'), message)
    assert not (tmp_path/'out').exists()

def test_option_of_another_problem(cli, tmp_path):
    one_line_error(cli('train', 'pets', '--valid_person', '12', '--data', dataset_path('pets'), '--out', tmp_path/'o'),
                   '--valid_person does not apply to problem pets')

def test_problem_not_written_yet(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(PROBLEMS, 'later', dict(module='visioncourse.not_yet', dataset='pets', summary='A later lesson'))
    one_line_error(cli('train', 'later', '--out', tmp_path/'o'), "problem 'later' is not available", 'not written yet')

def test_data_folder_missing(cli, tmp_path):
    one_line_error(cli('train', 'pets', '--data', tmp_path/'nowhere', '--out', tmp_path/'o'), tmp_path/'nowhere', 'does not exist')

def test_data_folder_wrong_layout(cli, tmp_path):
    (tmp_path/'pets').mkdir()
    one_line_error(cli('train', 'pets', '--data', tmp_path/'pets', '--out', tmp_path/'o'), "no 'images/' folder")

def test_truncated_image_stops_with_its_name(cli, data_cut, tmp_path):
    root = data_cut('pets', 1)   # one photo of each breed
    good = sorted((root/'images').glob('*.jpg'))[0]
    bad = root/'images'/'Bengal_99.jpg'
    bad.write_bytes(good.read_bytes()[:3000])
    one_line_error(cli('train', 'pets', '--data', root, '--out', tmp_path/'o'), bad, 'does not decode')

def test_corrupt_image_in_pascal(cli, pascal_copy, tmp_path):
    fname = first_row(pascal_copy/'train.csv')['fname']
    (pascal_copy/'train'/fname).write_text('not a jpeg')
    one_line_error(cli('train', 'pascal', '--data', pascal_copy, '--out', tmp_path/'o'), fname, 'not an image')

def _rename_column(rows): rows[0][0] = 'file'; return ['train.csv', 'fname']
def _empty_labels(rows): rows[1][1] = ''; return ['train.csv', rows[1][0]]
def _missing_image(rows): rows.append(['999999.jpg', rows[1][1], 'False']); return ['train.csv', '999999.jpg']

@pytest.mark.parametrize('edit', [_rename_column, _empty_labels, _missing_image])
def test_malformed_train_csv(cli, pascal_copy, tmp_path, edit):
    "`edit` spoils the rows of train.csv and returns what the one-line error must name."
    rows = list(csv.reader(open(pascal_copy/'train.csv', newline='', encoding='utf-8')))
    fragments = edit(rows)
    with open(pascal_copy/'train.csv', 'w', newline='', encoding='utf-8') as f: csv.writer(f).writerows(rows)
    one_line_error(cli('train', 'pascal', *SMALL, '--data', pascal_copy, '--out', tmp_path/'o'), *fragments)

def test_biwi_missing_pose_file(cli, biwi_copy, tmp_path):
    pose = sorted(biwi_copy.glob('*/*_pose.txt'))[-1]
    pose.unlink()
    one_line_error(cli('train', 'biwi', *SMALL, '--data', biwi_copy, '--out', tmp_path/'o'), pose.name)

# --- predict ---

def test_predict_pets(cli, pets_model, pets_small):
    imgs = sorted((pets_small/'images').glob('*.jpg'))
    img = imgs[-1]
    res = cli('predict', pets_model, img, img)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f'{img}: ')
    breed, prob = lines[0].split(': ')[1].rsplit(' ', 1)
    assert 0 <= float(prob.strip('()')) <= 1 and breed in breeds_of_each(imgs)   # one of the breeds it was trained on

def test_predict_pascal_uses_trained_threshold(cli, pascal_run):
    train_csv = dataset_path('pascal_2007')/'train.csv'
    img = train_csv.parent/'train'/first_row(train_csv)['fname']
    res = cli('predict', pascal_run.out/'model.pkl', img)
    assert res.returncode == 0, res.stderr
    thresh = json.loads((pascal_run.out/'metrics.json').read_text())['metrics']['threshold']
    assert f'(threshold {thresh:.2f})' in res.stdout
    labels = res.stdout.split(': ', 1)[1].rsplit(' (threshold', 1)[0].split()
    vocab = {l for r in csv.DictReader(open(train_csv, encoding='utf-8')) for l in r['labels'].split()}  # the labels trained on
    assert labels == ['(no', 'label', 'above', 'the', 'threshold)'] or set(labels) <= vocab

def test_predict_biwi_centre_in_pixels(cli, biwi_model):
    img = sorted(dataset_path('biwi_head_pose').glob('*/*_rgb.jpg'))[-1]
    res = cli('predict', biwi_model, img)
    assert res.returncode == 0, res.stderr
    x = float(res.stdout.split('x=')[1].split(',')[0]); y = float(res.stdout.split('y=')[1].split(' ')[0])
    with Image.open(img) as im: w, h = im.size
    assert 0 <= x <= w and 0 <= y <= h

def test_predict_rejects_files_that_are_not_exports(cli, tmp_path):
    img = sorted((dataset_path('pets')/'images').glob('*.jpg'))[0]
    junk = tmp_path/'junk.pkl'; junk.write_bytes(os.urandom(256))
    one_line_error(cli('predict', junk, img), junk, 'not a visioncourse model export')
    other = tmp_path/'dict.pkl'; other.write_bytes(pickle.dumps({'a': 1}))
    one_line_error(cli('predict', other, img), other, 'not a visioncourse model export')
    one_line_error(cli('predict', tmp_path/'missing.pkl', img), 'missing.pkl', 'does not exist')

def test_predict_image_that_does_not_decode(cli, pets_model, tmp_path):
    bad = tmp_path/'notes.jpg'; bad.write_text('hello')
    one_line_error(cli('predict', pets_model, bad), bad, 'not an image')
    one_line_error(cli('predict', pets_model, tmp_path/'gone.jpg'), 'gone.jpg', 'does not exist')

def test_predict_text_options_checked_first(cli, pets_model, tmp_path):
    one_line_error(cli('predict', pets_model, '--text', '  '), '--text is empty')
    one_line_error(cli('predict', pets_model), 'give the files to predict')
    one_line_error(cli('predict', pets_model, '--text', 'A fine film'), 'predicts images; give image files, not --text')

@pytest.fixture
def text_problem(monkeypatch):
    "A registered text problem whose 'model' counts words: the command line's text plumbing, without training one."
    from visioncourse.problems import Problem
    import visioncourse.training, contextlib
    class WordsProblem(Problem):
        name = 'words'   # its dataset and summary come from the registry line below
        inputs = 'text'
        def predict(self, learn, item, out=None): return dict(words=len(item.split()))
        def describe(self, item, pred): return f"{item}: {pred['words']} words"
    mod = types.ModuleType('visioncourse_words'); mod.problem = WordsProblem()
    monkeypatch.setitem(sys.modules, 'visioncourse_words', mod)
    monkeypatch.setitem(PROBLEMS, 'words', dict(module='visioncourse_words', dataset='imdb_sample', summary='Words'))
    learn = types.SimpleNamespace(visioncourse=dict(problem='words'), no_bar=contextlib.nullcontext, no_logging=contextlib.nullcontext)
    monkeypatch.setattr(visioncourse.training, 'load_model', lambda fn: learn)

def test_predict_text_and_text_files(cli, text_problem, tmp_path):
    model = tmp_path/'model.pkl'; model.write_bytes(b'x')
    res = cli('predict', model, '--text', 'A truly wonderful film')
    assert res.returncode == 0 and res.stdout == "A truly wonderful film: 4 words\n", res
    review = tmp_path/'review.txt'; review.write_text('Dull and\nlong.')
    assert cli('predict', model, review).stdout == f"{review}: 3 words\n"
    latin1 = tmp_path/'latin1.txt'; latin1.write_bytes('café'.encode('latin-1'))
    one_line_error(cli('predict', model, latin1), latin1, 'not a UTF-8 text file')
    blank = tmp_path/'blank.txt'; blank.write_text(' \n')
    one_line_error(cli('predict', model, blank), blank, 'is empty')

def test_imdb_predict_text(cli, imdb_run):
    "ULMFiT through the command line (tests/conftest.py's `imdb_run`), then a prediction for a text."
    # the language model (1 frozen + 1 unfrozen epoch), then the classifier (3 unfreezing steps + 1 epoch)
    epochs = [l for l in imdb_run.log.splitlines() if l.startswith('epoch ')]
    assert len(epochs) == 6 and 'perplexity' in epochs[0] and 'perplexity' not in epochs[-1], imdb_run.log
    report = json.loads((imdb_run.out/'metrics.json').read_text())
    assert {'lm_accuracy', 'lm_perplexity', 'accuracy'} <= set(report['metrics']) and report['settings']['lr'] == 1e-2
    res = cli('predict', imdb_run.out/'model.pkl', '--text', 'A wonderful, moving film.')
    assert res.returncode == 0 and 'A wonderful, moving film.' in res.stdout.split(': ')[0], res

# --- serve ---

def test_serve_hands_the_model_to_visioncourse_serve(cli, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType('visioncourse.serve'); fake.serve = lambda *a: calls.append(a)
    monkeypatch.setitem(sys.modules, 'visioncourse.serve', fake)
    model = tmp_path/'model.pkl'; model.write_bytes(b'x')
    assert cli('serve', model, '--port', '9001').returncode == 0
    assert calls == [(str(model), '127.0.0.1', 9001)]

def test_serve_errors(cli, tmp_path, monkeypatch):
    one_line_error(cli('serve', tmp_path/'missing.pkl'), 'missing.pkl: model file does not exist')
    model = tmp_path/'model.pkl'; model.write_bytes(b'x')
    one_line_error(cli('serve', model, '--port', '70000'), '--port must be between 1 and 65535')
    monkeypatch.setitem(sys.modules, 'visioncourse.serve', None)  # as if the module (or a library it needs) were missing
    one_line_error(cli('serve', model), 'serve needs visioncourse.serve')
