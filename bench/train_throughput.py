"""Training throughput of resnet34 on the pets pipeline: fp32 (the book's default) against mixed precision with channels_last.

Prints images per second after warm-up for each mode and their ratio, from one run on one device.
Mixed precision is bf16 autocast on a CPU and fp16 autocast with a GradScaler on a GPU (fp16 is what `to_fp16` uses).
Batches come from `pets_dls` (the notebook's pipeline) and are fetched once, before timing, so the figure measures
the model's forward, backward and optimiser step, not JPEG decoding (see data_pipeline.py for that).

The two modes are measured alternately, --repeats times each, and the best rate of each is compared (a shared
machine's noise only ever slows a run down).

    python bench/train_throughput.py [--size 224] [--bs 32] [--warmup 2] [--steps 5] [--repeats 2]
"""
import argparse, time, platform, datetime
import torch, torchvision, fastai
from fastai.vision.all import resnet34, CrossEntropyLossFlat
from visioncourse.data import dataset_path
from visioncourse.pets import pets_dls
from visioncourse.learner import course_learner

def batches(size, bs, n):
    "`n` batches of the pets pipeline at `size` pixels, as plain tensors on the default device."
    dls = pets_dls(dataset_path('pets')/'images', size=size, bs=bs, num_workers=2)
    out, it = [], iter(dls.train)
    while len(out) < n:
        try: xb, yb = next(it)
        except StopIteration: it = iter(dls.train); continue
        out.append((xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor)))
    return dls, out

def throughput(dls, data, mixed, warmup, steps):
    "Images per second of training steps on `data`, after `warmup` steps."
    device = data[0][0].device
    model = course_learner(dls, resnet34, pretrained=False).model.to(device)
    if mixed: model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=mixed and dtype == torch.float16)
    loss_func = CrossEntropyLossFlat()
    model.train()
    def step(xb, yb):
        if mixed: xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=mixed):
            loss = loss_func(model(xb), yb)
        opt.zero_grad(); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    for xb, yb in data[:warmup]: step(xb, yb)
    if device.type == 'cuda': torch.cuda.synchronize()
    start = time.perf_counter()
    for xb, yb in data[warmup:warmup+steps]: step(xb, yb)
    if device.type == 'cuda': torch.cuda.synchronize()
    return sum(len(xb) for xb, _ in data[warmup:warmup+steps]) / (time.perf_counter() - start)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=224); p.add_argument('--bs', type=int, default=32)
    p.add_argument('--warmup', type=int, default=2); p.add_argument('--steps', type=int, default=5)
    p.add_argument('--repeats', type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    dls, data = batches(a.size, a.bs, a.warmup + a.steps)
    device = data[0][0].device
    name = torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU {platform.machine()}, {torch.get_num_threads()} threads'
    print(f'train_throughput: resnet34 {a.size}px bs {a.bs}, {a.warmup} warm-up + {a.steps} timed steps on {name}')
    print(f'  torch {torch.__version__}, torchvision {torchvision.__version__}, fastai {fastai.__version__}, {datetime.date.today()}')
    runs = {False: [], True: []}
    for _ in range(a.repeats):
        for mixed in (False, True): runs[mixed].append(throughput(dls, data, mixed, a.warmup, a.steps))
    fp32, mixed = max(runs[False]), max(runs[True])
    kind = 'fp16' if device.type == 'cuda' else 'bf16'
    fmt = lambda rs: ', '.join(f'{r:.1f}' for r in rs)
    print(f'  fp32:                          {fp32:8.1f} images/s   (runs: {fmt(runs[False])})')
    print(f'  {kind} autocast + channels_last: {mixed:8.1f} images/s   (runs: {fmt(runs[True])})')
    print(f'  ratio mixed/fp32:              {mixed/fp32:8.2f}x')
