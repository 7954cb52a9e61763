"The `visioncourse` command: every verb, and bad input, on temporary copies of the sample data (../shared is never modified)."
import json, os, pickle, shutil, subprocess, sys
from pathlib import Path
import pytest
from visioncourse.data import dataset_path

EXE = Path(sys.executable).parent/'visioncourse'
SMALL = ['--epochs', '1', '--size', '32', '--bs', '16', '--arch', 'resnet18', '--no-pretrained']

def run(*args, **kw):
    "Run the installed `visioncourse` command."
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, **kw)

def one_line_error(res, *fragments):
    "The command failed with status 2, printing one error line (no traceback) holding each fragment."
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    lines = [l for l in res.stderr.splitlines() if l.startswith('visioncourse: error:')]
    assert len(lines) == 1 and 'Traceback' not in res.stderr, res.stderr
    for f in fragments: assert str(f) in lines[0], (f, lines[0])

@pytest.fixture(scope='module')
def pets_small(tmp_path_factory):
    "A copy of the pets sample with two breeds (a cat and a dog, 10 images each), to keep training fast."
    dst = tmp_path_factory.mktemp('data')/'pets'
    (dst/'images').mkdir(parents=True)
    for f in (dataset_path('pets')/'images').glob('*.jpg'):
        if f.name.startswith(('Abyssinian_', 'beagle_')): shutil.copy(f, dst/'images'/f.name)
    return dst

@pytest.fixture(scope='module')
def trained(tmp_path_factory, pets_small):
    "Train each problem once, small, into a temporary folder."
    out = tmp_path_factory.mktemp('runs')
    data = {'pets': ['--data', pets_small]}
    for problem in ('pets', 'pascal', 'biwi'):
        res = run('train', problem, *SMALL, *data.get(problem, []), '--out', out/problem)
        assert res.returncode == 0, res.stderr[-3000:]
    return out

@pytest.fixture
def biwi_copy(tmp_path):
    dst = tmp_path/'biwi_head_pose'
    shutil.copytree(dataset_path('biwi_head_pose'), dst)
    return dst

@pytest.fixture
def pascal_copy(tmp_path):
    "train.csv and the images it lists."
    src, dst = dataset_path('pascal_2007'), tmp_path/'pascal_2007'
    (dst/'train').mkdir(parents=True)
    shutil.copy(src/'train.csv', dst/'train.csv')
    for f in (src/'train').iterdir(): shutil.copy(f, dst/'train'/f.name)
    return dst

def test_help():
    res = run('--help')
    assert res.returncode == 0 and 'train' in res.stdout and 'predict' in res.stdout and 'datasets' in res.stdout

def test_predict_help_warns_about_pickles():
    res = run('predict', '--help')
    assert res.returncode == 0 and 'only load model files you trust' in res.stdout

def test_datasets_lists_all_three():
    res = run('datasets')
    assert res.returncode == 0, res.stderr
    assert '370 images' in res.stdout and '64 rows in train.csv' in res.stdout and '14 frames of 2 persons' in res.stdout

@pytest.mark.parametrize('problem,plot', [('pets', 'confusion_matrix.png'), ('pascal', 'threshold_sweep.png'),
                                          ('biwi', 'show_results.png')])
def test_train_writes_model_metrics_and_plots(trained, problem, plot):
    out = trained/problem
    assert {'model.pkl', 'metrics.json', 'show_batch.png', 'lr_find.png', plot} <= {p.name for p in out.iterdir()}
    report = json.loads((out/'metrics.json').read_text())
    assert report['problem'] == problem and report['settings']['size'] == 32 and report['settings']['pretrained'] is False
    assert report['versions']['fastai'] and report['device'] and report['wall_time_s'] > 0
    assert all(isinstance(v, float) for v in report['metrics'].values())
    assert not [p for p in trained.iterdir() if p.name.startswith('.')], 'temporary folders left behind'

def test_predict_pets(trained):
    img = dataset_path('pets')/'images'/'beagle_10.jpg'
    res = run('predict', trained/'pets'/'model.pkl', img, img)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f'{img}: ')
    breed, prob = lines[0].split(': ')[1].rsplit(' ', 1)
    assert 0 <= float(prob.strip('()')) <= 1 and breed in ('Abyssinian', 'beagle')

def test_predict_pascal_uses_trained_threshold(trained):
    img = dataset_path('pascal_2007')/'train'/'000032.jpg'
    res = run('predict', trained/'pascal'/'model.pkl', img)
    assert res.returncode == 0, res.stderr
    thresh = json.loads((trained/'pascal'/'metrics.json').read_text())['metrics']['threshold']
    assert f'(threshold {thresh:.2f})' in res.stdout
    labels = res.stdout.split(': ', 1)[1].rsplit(' (threshold', 1)[0].split()
    vocab = {'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow', 'diningtable', 'dog',
             'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor'}
    assert labels == ['(no', 'label', 'above', 'the', 'threshold)'] or set(labels) <= vocab

def test_predict_biwi_centre_in_pixels(trained):
    img = dataset_path('biwi_head_pose')/'12'/'frame_00019_rgb.jpg'
    res = run('predict', trained/'biwi'/'model.pkl', img)
    assert res.returncode == 0, res.stderr
    x = float(res.stdout.split('x=')[1].split(',')[0]); y = float(res.stdout.split('y=')[1].split(' ')[0])
    assert 0 <= x <= 640 and 0 <= y <= 480

def test_refuses_non_empty_out_without_force(trained):
    before = (trained/'biwi'/'metrics.json').read_text()
    one_line_error(run('train', 'biwi', *SMALL, '--out', trained/'biwi'), 'is not empty; use --force')
    assert (trained/'biwi'/'metrics.json').read_text() == before

def test_run_failing_after_training_keeps_earlier_result(trained):
    "A run that breaks while writing its results leaves the earlier --out exactly as it was, and no temporary folder."
    before = {p.name: p.read_bytes() for p in (trained/'biwi').iterdir()}
    code = ("import sys, visioncourse.cli as cli\n"
            "def boom(*a, **k): raise RuntimeError('disk full')\n"
            "cli.write_results = boom\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, '-c', code, 'train', 'biwi', *SMALL, '--lr', '1e-3',
                          '--out', trained/'biwi', '--force'], capture_output=True, text=True)
    assert res.returncode != 0 and 'disk full' in res.stderr
    assert {p.name: p.read_bytes() for p in (trained/'biwi').iterdir()} == before
    assert not [p for p in trained.iterdir() if p.name.startswith('.')], 'temporary folders left behind'

def test_force_replaces_earlier_result(trained, tmp_path):
    out = tmp_path/'biwi'
    shutil.copytree(trained/'biwi', out)
    (out/'stale.txt').write_text('from an earlier run')
    res = run('train', 'biwi', *SMALL, '--lr', '1e-3', '--seed', '7', '--out', out, '--force')
    assert res.returncode == 0, res.stderr[-3000:]
    settings = json.loads((out/'metrics.json').read_text())['settings']
    assert settings['lr'] == 1e-3 and settings['seed'] == 7 and settings['valid_person'] == '12'
    assert not (out/'stale.txt').exists() and sorted(p.name for p in tmp_path.iterdir()) == ['biwi']

def test_out_inside_a_file(tmp_path):
    (tmp_path/'afile').write_text('x')
    one_line_error(run('train', 'biwi', *SMALL, '--out', tmp_path/'afile'/'run'), 'cannot create its folder')

@pytest.mark.parametrize('option,value,message', [
    ('--epochs', '-2', '--epochs must be at least 1, got -2'),
    ('--size', '0', '--size must be at least 16 pixels, got 0'),
    ('--arch', 'vgg16', "--arch 'vgg16' is not one of resnet18, resnet34, resnet50"),
    ('--bs', '0', '--bs must be at least 1'),
    ('--epochs', 'many', "argument --epochs: invalid int value: 'many'"),
])
def test_invalid_options(tmp_path, option, value, message):
    one_line_error(run('train', 'pets', option, value, '--out', tmp_path/'out'), message)
    assert not (tmp_path/'out').exists()

def test_unknown_problem_and_verb():
    one_line_error(run('train', 'cats'), "unknown problem 'cats'")
    one_line_error(run('fit', 'pets'), "unknown verb 'fit'")

def test_data_folder_missing(tmp_path):
    one_line_error(run('train', 'pets', '--data', tmp_path/'nowhere', '--out', tmp_path/'o'), tmp_path/'nowhere', 'does not exist')

def test_data_folder_wrong_layout(tmp_path):
    (tmp_path/'pets').mkdir()
    one_line_error(run('train', 'pets', '--data', tmp_path/'pets', '--out', tmp_path/'o'), "no 'images/' folder")

def test_truncated_image_stops_with_its_name(tmp_path):
    src = dataset_path('pets')/'images'
    (tmp_path/'pets'/'images').mkdir(parents=True)
    for f in sorted(src.glob('*.jpg'))[:6]: shutil.copy(f, tmp_path/'pets'/'images'/f.name)
    bad = tmp_path/'pets'/'images'/'Bengal_99.jpg'
    bad.write_bytes(sorted(src.glob('*.jpg'))[0].read_bytes()[:3000])
    one_line_error(run('train', 'pets', '--data', tmp_path/'pets', '--out', tmp_path/'o'), bad, 'does not decode')

def test_corrupt_image_in_pascal(pascal_copy, tmp_path):
    (pascal_copy/'train'/'000032.jpg').write_text('not a jpeg')
    one_line_error(run('train', 'pascal', '--data', pascal_copy, '--out', tmp_path/'o'), '000032.jpg', 'does not decode')

@pytest.mark.parametrize('edit,fragments', [
    (lambda t: t.replace('fname,labels,is_valid', 'file,labels,is_valid'), ['train.csv', 'fname']),
    (lambda t: t.replace('000032.jpg,aeroplane person,False', '000032.jpg,,False'), ['train.csv', '000032.jpg']),
    (lambda t: t + '999999.jpg,dog,False\n', ['train.csv', '999999.jpg']),
])
def test_malformed_train_csv(pascal_copy, tmp_path, edit, fragments):
    csv = pascal_copy/'train.csv'
    csv.write_text(edit(csv.read_text()))
    one_line_error(run('train', 'pascal', *SMALL, '--data', pascal_copy, '--out', tmp_path/'o'), *fragments)

def test_biwi_missing_pose_file(biwi_copy, tmp_path):
    (biwi_copy/'12'/'frame_00054_pose.txt').unlink()
    one_line_error(run('train', 'biwi', *SMALL, '--data', biwi_copy, '--out', tmp_path/'o'), 'frame_00054_pose.txt')

def test_predict_rejects_files_that_are_not_exports(tmp_path):
    img = sorted((dataset_path('pets')/'images').glob('*.jpg'))[0]
    junk = tmp_path/'junk.pkl'; junk.write_bytes(os.urandom(256))
    one_line_error(run('predict', junk, img), junk, 'not a visioncourse model export')
    other = tmp_path/'dict.pkl'; other.write_bytes(pickle.dumps({'a': 1}))
    one_line_error(run('predict', other, img), other, 'not a visioncourse model export')
    one_line_error(run('predict', tmp_path/'missing.pkl', img), 'missing.pkl', 'does not exist')

def test_predict_image_that_does_not_decode(trained, tmp_path):
    bad = tmp_path/'notes.jpg'; bad.write_text('hello')
    one_line_error(run('predict', trained/'pets'/'model.pkl', bad), bad, 'does not decode')

def test_debug_shows_traceback(tmp_path):
    res = run('train', 'pets', '--data', tmp_path/'nowhere', '--debug')
    assert res.returncode != 0 and 'Traceback' in res.stderr
