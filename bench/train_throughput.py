"""Training throughput of resnet34: the model alone on synthetic batches, or on batches of the pets pipeline.

`--mode synthetic` (the default) measures the device, not the loader: random images of the pets batches' shape
(`bs` x 3 x `size` x `size`, 37 classes) made once on the device, and fastai's resnet34 classifier (the model
`vision_learner` builds, random weights) trained on them with AdamW, for every combination of batch size (`--bs`,
default 64 128 256), precision (fp32; fp16 and bf16 autocast, fp16 with a GradScaler) and memory format (with and
without channels_last). A configuration the device cannot run (out of memory, no fp16 kernels) is reported as such.

`--mode pipeline` is the earlier benchmark: batches from `pets_dls` (the notebook's pipeline, 2 workers) fetched once
before timing, fp32 against mixed precision with channels_last (fp16 on a GPU, bf16 on a CPU), one batch size.

Each configuration is measured --repeats times, alternating, and the best rate kept (a shared machine's noise only
ever slows a run down).

    python bench/train_throughput.py [--mode synthetic|pipeline] [--size 224] [--bs 64 128 256] [--warmup 3] [--steps 10] [--repeats 2]
"""
import argparse, time, platform, datetime
import visioncourse.settings   # first: it quiets a torchvision import warning
import torch, torchvision, fastai
from fastai.vision.all import resnet34, resnet18, CrossEntropyLossFlat, create_vision_model

ARCHS = {'resnet34': resnet34, 'resnet18': resnet18}
PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}

def device_name(device):
    if device.type == 'cuda': return torch.cuda.get_device_name(device)
    return f'CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'

def synthetic(bs, size, n_classes=37, device=None):
    "One batch of random images and labels of the pets batches' shape, on `device`."
    g = torch.Generator().manual_seed(0)
    xb, yb = torch.randn(bs, 3, size, size, generator=g), torch.randint(0, n_classes, (bs,), generator=g)
    return xb.to(device), yb.to(device)

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)

def throughput(data, arch=resnet34, precision='fp32', channels_last=False, warmup=3, steps=10, n_out=37):
    "Images per second of training steps (forward, backward, AdamW step) of `arch`'s fastai classifier on the batches `data`, after `warmup` steps."
    device = data[0][0].device
    model = create_vision_model(arch, n_out, pretrained=False).to(device)
    if channels_last: model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    loss_func = CrossEntropyLossFlat()
    model.train()
    def step(xb, yb):
        if channels_last: xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_func(model(xb), yb)
        opt.zero_grad(); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    for i in range(warmup): step(*data[i % len(data)])
    sync(device)
    start = time.perf_counter()
    timed = [data[(warmup + i) % len(data)] for i in range(steps)]   # the batches after the warm-up's, cycling
    for xb, yb in timed: step(xb, yb)
    sync(device)
    return sum(len(xb) for xb, _ in timed) / (time.perf_counter() - start)

def best_of(repeats, configs, measure):
    "The best of `repeats` measurements of each config, measured alternately; an error message instead when it cannot run."
    runs = {c: [] for c in configs}
    for _ in range(repeats):
        for c in configs:
            if isinstance(runs[c], str): continue
            try: runs[c].append(measure(c))
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                runs[c] = 'out of memory' if 'out of memory' in str(e) else f'cannot run ({str(e).splitlines()[0][:60]})'
            finally:
                if torch.cuda.is_available(): torch.cuda.empty_cache()
    return runs

def run_synthetic(a, device):
    arch = ARCHS[a.arch]
    print(f'train_throughput (synthetic batches on the device): {a.arch} {a.size}px, {a.warmup} warm-up + {a.steps} timed steps on {device_name(device)}')
    print(f'  torch {torch.__version__}, torchvision {torchvision.__version__}, fastai {fastai.__version__}, {datetime.date.today()}')
    print(f'  {"bs":>4}  {"precision":<14} {"channels_last":<13} {"images/s":>10}  {"vs fp32":>7}   runs')
    for bs in a.bs:
        data = [synthetic(bs, a.size, device=device)]
        configs = [(p, cl) for p in PRECISIONS for cl in (False, True)]
        runs = best_of(a.repeats, configs, lambda c: throughput(data, arch, c[0], c[1], a.warmup, a.steps))
        base = max(runs[('fp32', False)]) if isinstance(runs[('fp32', False)], list) and runs[('fp32', False)] else None
        for (p, cl), rs in runs.items():
            name = p if p == 'fp32' else f'{p} autocast'
            if isinstance(rs, str) or not rs:
                print(f'  {bs:>4}  {name:<14} {"yes" if cl else "no":<13} {rs or "no run":>10}'); continue
            ratio = f'{max(rs)/base:6.2f}x' if base else '      -'
            print(f'  {bs:>4}  {name:<14} {"yes" if cl else "no":<13} {max(rs):10.1f}  {ratio}   ({", ".join(f"{r:.1f}" for r in rs)})')

def pipeline_batches(size, bs, n):
    "`n` batches of the pets pipeline at `size` pixels, as plain tensors on the default device."
    from visioncourse.data import dataset_path
    from visioncourse.pets import pets_dls
    dls = pets_dls(dataset_path('pets')/'images', size=size, bs=bs, num_workers=2)
    out, it = [], iter(dls.train)
    while len(out) < n:
        try: xb, yb = next(it)
        except StopIteration: it = iter(dls.train); continue
        out.append((xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor)))
    return dls, out

def run_pipeline(a):
    bs = a.bs[0]
    dls, data = pipeline_batches(a.size, bs, a.warmup + a.steps)
    device = data[0][0].device
    print(f'train_throughput (pets pipeline batches): {a.arch} {a.size}px bs {bs}, {a.warmup} warm-up + {a.steps} timed steps on {device_name(device)}')
    print(f'  torch {torch.__version__}, torchvision {torchvision.__version__}, fastai {fastai.__version__}, {datetime.date.today()}')
    kind = 'fp16' if device.type == 'cuda' else 'bf16'
    runs = best_of(a.repeats, ['fp32', kind], lambda p: throughput(data, ARCHS[a.arch], p, p != 'fp32', a.warmup, a.steps, dls.c))
    fmt = lambda rs: ', '.join(f'{r:.1f}' for r in rs) if isinstance(rs, list) else rs
    fp32, mixed = runs['fp32'], runs[kind]
    print(f'  fp32:                          {max(fp32):8.1f} images/s   (runs: {fmt(fp32)})')
    print(f'  {kind} autocast + channels_last: {max(mixed):8.1f} images/s   (runs: {fmt(mixed)})')
    print(f'  ratio mixed/fp32:              {max(mixed)/max(fp32):8.2f}x')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--mode', choices=('synthetic', 'pipeline'), default='synthetic')
    p.add_argument('--arch', choices=list(ARCHS), default='resnet34')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--bs', type=int, nargs='+', default=[64, 128, 256], help='batch sizes (pipeline mode: the first)')
    p.add_argument('--warmup', type=int, default=3); p.add_argument('--steps', type=int, default=10)
    p.add_argument('--repeats', type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    if a.mode == 'synthetic': run_synthetic(a, torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
    else: run_pipeline(a)
