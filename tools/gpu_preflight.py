"""Pre-flight for `make test-gpu`: what this machine gives the GPU cells, and one clear line when CUDA is not usable.

Prints the torch version and its CUDA build, each GPU's name and memory (and the driver, from `nvidia-smi`), the size
of /dev/shm (where DataLoader worker processes share their batches) and the VISIONCOURSE_* settings that scale the GPU
cells down. Exits 0 when CUDA works (a small computation on the GPU is checked), else 1 with the reason.
Usage: python tools/gpu_preflight.py
"""
import os, shutil, subprocess, sys

DRIVER_FOR_CUDA = {'12': 525, '13': 580}   # the oldest NVIDIA Linux driver (major version) for each CUDA major: CUDA 12.0 needs 525, 13.0 needs 580


def smi_gpus():
    "The (name, driver, memory) lines `nvidia-smi` reports, or `None` when there is no `nvidia-smi`; [] when it fails."
    if not shutil.which('nvidia-smi'): return None
    try: res = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired): return []
    return [tuple(p.strip() for p in l.split(',')) for l in res.stdout.splitlines() if l.count(',') == 2] if res.returncode == 0 else []


def shm_line():
    "The size of /dev/shm, in words."
    if not os.path.isdir('/dev/shm'): return "/dev/shm: none (DataLoader workers cannot share batches: set VISIONCOURSE_WORKERS=0)"
    u = shutil.disk_usage('/dev/shm')
    small = '  (small: DataLoader workers may fail with "bus error"; set VISIONCOURSE_WORKERS=0 or give the container --shm-size=8g)' if u.total < 2**30 else ''
    return f"/dev/shm: {u.total/2**30:.1f} GiB, {u.free/2**30:.1f} GiB free{small}"


def why_not(torch, gpus):
    "The reason CUDA cannot be used here, in one line."
    build = torch.version.cuda
    if build is None: return f"torch {torch.__version__} is a CPU-only build; install the CUDA build (the torch wheel on PyPI for Linux is one)"
    need = DRIVER_FOR_CUDA.get(build.split('.')[0])
    need_text = f", which needs NVIDIA driver {need} or newer" if need else ''
    if gpus is None: return f"no NVIDIA GPU here (no nvidia-smi); torch {torch.__version__} is a CUDA {build} build{need_text}"
    if not gpus: return (f"nvidia-smi exists but reports no GPU (the driver is not loaded or the GPU is not visible to this container); "
                         f"torch {torch.__version__} is a CUDA {build} build{need_text}")
    drivers = sorted({d for _, d, _ in gpus})
    old = [d for d in drivers if need and d.split('.')[0].isdigit() and int(d.split('.')[0]) < need]
    advice = (f"update the NVIDIA driver to {need} or newer, or install a torch {torch.__version__.split('+')[0]} build for the CUDA "
              f"your driver supports from PyTorch's index (https://pytorch.org/get-started/locally/) into .venv first")
    if old: return f"the GPU's driver {', '.join(old)} is too old: torch {torch.__version__} is a CUDA {build} build{need_text}; {advice}"
    return (f"nvidia-smi sees {len(gpus)} GPU(s) (driver {', '.join(drivers)}, new enough for torch {torch.__version__}, a CUDA {build} "
            f"build{need_text}) but PyTorch cannot use CUDA: check CUDA_VISIBLE_DEVICES, that this process sees /dev/nvidia* "
            f"(a container needs --gpus), and `{sys.executable} -c 'import torch; torch.cuda.init()'` for CUDA's own error")


def main():
    import torch
    print(f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none (CPU-only build)'}")
    gpus = smi_gpus()
    for name, driver, mem in gpus or []: print(f"nvidia-smi: {name}, {mem}, driver {driver}")
    print(shm_line())
    scale = {k: os.environ[k] for k in ('VISIONCOURSE_GPU_BS_SCALE', 'VISIONCOURSE_WORKERS') if os.environ.get(k)}
    print('GPU cells: ' + (', '.join(f"{k}={v}" for k, v in scale.items()) if scale else "the book's batch sizes and workers (VISIONCOURSE_GPU_BS_SCALE, VISIONCOURSE_WORKERS not set)"))
    if not torch.cuda.is_available():
        print(f"make test-gpu: stopping: CUDA is not usable: {why_not(torch, gpus)}")
        print("make test-gpu: (make test rehearses the GPU cells on the CPU instead)")
        return 1
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"GPU {i}: {p.name}, {p.total_memory/2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
    print(f"cuDNN {torch.backends.cudnn.version()}, bf16 {'supported' if torch.cuda.is_bf16_supported() else 'not supported'}")
    x = torch.arange(4., device='cuda')
    with torch.autocast('cuda', dtype=torch.float16): y = (x[None] @ x[:, None]).item()
    if y != 14.0:
        print(f"make test-gpu: stopping: a float16 product on the GPU gave {y}, not 14"); return 1
    print("make test-gpu: CUDA works (a float16 product on the GPU checked)")
    return 0


if __name__ == '__main__': sys.exit(main())
