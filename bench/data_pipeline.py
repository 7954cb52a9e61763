"""Data pipeline throughput on the CPU: images per second through decode, presize and augment.

fastai's pets pipeline (`pets_dls`: decode, `Resize(460)` per item, `aug_transforms(size=224)` per batch, here on
the CPU) against a plain torchvision `Dataset`/`DataLoader` doing decode, resize to 460, random crop to 224 and
flip on the same images, in the same run, for each number of workers.

    python bench/data_pipeline.py [--workers 0 2] [--bs 32] [--epochs 1]
"""
import argparse, time, datetime, os, platform
import torch, torchvision, fastai
from torch.utils.data import Dataset, DataLoader
from torchvision.transforms import v2 as T
from torchvision.io import decode_jpeg, read_file
from fastai.vision.all import get_image_files
from visioncourse.data import dataset_path
from visioncourse.pets import pets_dls, pet_label

class PetsDataset(Dataset):
    "Decode, resize to 460, random-crop to 224 and flip each pet image, with torchvision alone."
    def __init__(self, files):
        self.files, self.vocab = files, sorted({pet_label(f) for f in files})
        self.tfm = T.Compose([T.Resize(460, antialias=True), T.RandomResizedCrop(224, scale=(0.75, 1.0), antialias=True),
                              T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True)])
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        img = decode_jpeg(read_file(str(self.files[i])), mode=torchvision.io.ImageReadMode.RGB)
        return self.tfm(img), self.vocab.index(pet_label(self.files[i]))

def rate(loader, epochs):
    "Images per second over `epochs` passes of `loader` (after one untimed batch)."
    next(iter(loader))
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        for xb, _ in loader: n += len(xb)
    return n / (time.perf_counter() - start)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    p.add_argument('--bs', type=int, default=32); p.add_argument('--epochs', type=int, default=1)
    a = p.parse_args()
    path = dataset_path('pets')/'images'
    files = get_image_files(path)
    print(f'data_pipeline: {len(files)} pet images, bs {a.bs}, {a.epochs} epoch(s), CPU {platform.machine()} with {os.cpu_count()} cores')
    print(f'  torch {torch.__version__}, torchvision {torchvision.__version__}, fastai {fastai.__version__}, {datetime.date.today()}')
    for w in a.workers:
        dls = pets_dls(path, size=224, presize=460, bs=a.bs, num_workers=w, device=torch.device('cpu'))
        fa = rate(dls.train, a.epochs) * 1  # drop_last makes the last partial batch vanish in both
        tv = rate(DataLoader(PetsDataset(files), batch_size=a.bs, shuffle=True, num_workers=w, drop_last=True), a.epochs)
        print(f'  workers={w}: fastai pets_dls {fa:7.1f} images/s   torchvision Dataset/DataLoader {tv:7.1f} images/s   ratio {fa/tv:5.2f}')
