"Data-parallel training with PyTorch's distributed engine: 2 CPU processes (gloo) launched by torchrun."
import json, os, subprocess, sys
import pytest
from pathlib import Path

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow   # two fresh processes, each importing fastai and training

def test_two_processes_train_and_only_rank0_writes(tmp_path):
    out = tmp_path/'ddp'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    res = subprocess.run([str(BIN/'torchrun'), '--standalone', '--nproc_per_node', '2', '--no-python',
                          str(BIN/'visioncourse'), 'train', 'biwi', '--epochs', '1', '--size', '32', '--bs', '2',
                          '--arch', 'resnet18', '--no-pretrained', '--out', out],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    ranks = [l for l in res.stdout.splitlines() if 'trained' in l and 'batches' in l]
    assert sorted(l.split('process ')[1][:6] for l in ranks) == ['0 of 2', '1 of 2'], res.stdout[-3000:]
    assert all(int(l.split('trained ')[1].split()[0]) > 0 for l in ranks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ddp']          # no temporary folder of another rank left
    assert len(list(out.glob('*.pkl'))) == 1 and res.stdout.count('wrote ') == 1
    report = json.loads((out/'metrics.json').read_text())
    assert report['settings']['processes'] == 2
