"""End-to-end `fine_tune` epochs at the book's settings against the model alone: does the data pipeline starve the device?

Builds, in a temporary folder (removed at the end), a pets folder of `--images` images (default 7,390, the full
Oxford-IIIT Pet dataset's count): copies of the sample's photos under new names in the same `<breed>_<n>.jpg`
layout, so the DataLoaders see as many files (and batches) as on the full dataset. Then it runs notebook 01's book
pipeline and training: `pets_dls` (`Resize(presize)` per item, `aug_transforms(size=size, min_scale=0.75)` per
batch, a seeded 20% validation split, fastai's default workers), `vision_learner(dls, resnet34, metrics=error_rate)`
(random weights: none can be downloaded here, and the speed is the same) and `fine_tune(epochs)`: one frozen epoch,
then `epochs` unfrozen ones. For each epoch it prints the training phase's images per second (training batches x
batch size / training time) and the whole epoch's, including validation; beside them, the model alone
(`train_throughput.throughput`: the same network, batch size, image size and precision on synthetic batches already
on the device, all layers trained, as in the unfrozen epochs). An unfrozen epoch's training rate well below the
model-only rate means the loader (decoding, presizing, augmentation) cannot keep the device busy.

    python bench/epoch_throughput.py [--images 7390] [--arch resnet34] [--size 224] [--presize 460] [--bs 64]
                                     [--epochs 1] [--workers N] [--precision fp32|fp16]
"""
import argparse, datetime, shutil, sys, tempfile, time
from pathlib import Path
import visioncourse.settings   # first: it quiets a torchvision import warning
import torch, torchvision, fastai
from fastai.vision.all import Callback, vision_learner, error_rate, get_image_files
sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import ARCHS, device_name, synthetic, throughput, sync
from visioncourse.data import dataset_path
from visioncourse.pets import pets_dls, pet_label

def replicate_pets(src, dest, n):
    "`dest/images` with `n` images: the photos of the pets folder `src` (its `images/`), copied in turn under new `<breed>_<k>.jpg` names."
    files = sorted(get_image_files(Path(src)/'images'))
    if not files: raise SystemExit(f"epoch_throughput: {Path(src)/'images'}: no images found")
    (dest/'images').mkdir(parents=True)
    for k in range(n):
        f = files[k % len(files)]
        shutil.copyfile(f, dest/'images'/f'{pet_label(f)}_{k+1}{f.suffix}')
    return dest/'images'

class EpochTimer(Callback):
    "Records each epoch's training and validation time, waiting for the device at each end."
    order = 100
    def __init__(self): self.epochs = []
    def before_train(self): sync(self.dls.device); self.t0 = time.perf_counter()
    def after_train(self): sync(self.dls.device); self.t1 = time.perf_counter()
    def after_validate(self):
        sync(self.dls.device)
        if hasattr(self, 't1'): self.epochs.append((self.frozen, self.t1 - self.t0, time.perf_counter() - self.t0))
    def before_epoch(self): self.frozen = any(not p.requires_grad for p in self.model.parameters())

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--images', type=int, default=7390); p.add_argument('--arch', choices=list(ARCHS), default='resnet34')
    p.add_argument('--size', type=int, default=224); p.add_argument('--presize', type=int, default=460)
    p.add_argument('--bs', type=int, default=64); p.add_argument('--epochs', type=int, default=1)
    p.add_argument('--workers', type=int, default=None, help="DataLoader workers (default: fastai's, min(16, cores))")
    p.add_argument('--precision', choices=('fp32', 'fp16'), default='fp32', help="fp16: `to_fp16()` (the GPU cells' mixed precision)")
    p.add_argument('--model-steps', type=int, default=10)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix='epoch_throughput_') as tmp:
        t = time.perf_counter()
        folder = replicate_pets(dataset_path('pets'), Path(tmp)/'pets', a.images)
        copied = time.perf_counter() - t
        kw = {} if a.workers is None else dict(num_workers=a.workers)
        dls = pets_dls(folder, size=a.size, presize=a.presize, bs=a.bs, **kw)
        device = dls.device
        learn = vision_learner(dls, ARCHS[a.arch], metrics=error_rate, pretrained=False, path=tmp)
        if a.precision == 'fp16': learn = learn.to_fp16()
        timer = EpochTimer()
        print(f'epoch_throughput: {a.arch} {a.size}px (presize {a.presize}) bs {a.bs}, {a.precision}, fine_tune({a.epochs}) on '
              f'{device_name(device)}, {dls.train.fake_l.num_workers} workers')
        print(f'  {a.images} images ({len(dls.train_ds)} training: {len(dls.train)} batches; {len(dls.valid_ds)} validation), '
              f'copied from {len(get_image_files(dataset_path("pets")/"images"))} sample photos in {copied:.1f} s')
        print(f'  torch {torch.__version__}, torchvision {torchvision.__version__}, fastai {fastai.__version__}, {datetime.date.today()}')
        with learn.no_bar(), learn.no_logging(): learn.fine_tune(a.epochs, cbs=timer)
        n_train = len(dls.train)*a.bs
        for i, (frozen, train_s, epoch_s) in enumerate(timer.epochs):
            print(f'  epoch {i} ({"frozen body" if frozen else "all layers"}): training {n_train/train_s:8.1f} images/s ({train_s:.1f} s), '
                  f'whole epoch with validation {(n_train + len(dls.valid_ds))/epoch_s:8.1f} images/s ({epoch_s:.1f} s)')
        del learn, dls
        model = throughput([synthetic(a.bs, a.size, device=device)], ARCHS[a.arch], 'fp16' if a.precision == 'fp16' else 'fp32',
                           False, warmup=3, steps=a.model_steps)
        print(f'  model alone (synthetic batches on the device, all layers, {a.precision}): {model:8.1f} images/s')
        last = [tr for frozen, tr, _ in timer.epochs if not frozen]
        if last:
            r = n_train/last[-1]/model
            print(f'  last unfrozen epoch\'s training / model alone: {r:.2f} ' + ('(the data pipeline starves the device)' if r < 0.8 else
                  '(the device, not the pipeline, sets the pace)') + (' [CPU: loader and model share the cores]' if device.type == 'cpu' else ''))
