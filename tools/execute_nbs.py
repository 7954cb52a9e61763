"""Execute notebooks in place so the committed copies show their outputs (figures, tables, training logs).

Cells flagged `#| slow` are skipped unless named in --flags, as `nbdev_test` does. `#| cuda` cells run as in
Jupyter: on a machine without a GPU the `setup_notebook()` call of the settings cell has installed a transformer that replaces each
of them with a one-line "Skipped" note, which is what a learner reading the committed notebook should see.
Training uses the quick settings unless VISIONCOURSE_QUICK=0 is set.
Usage: python tools/execute_nbs.py nbs/01_pets.ipynb [...] [--flags "cuda slow"]
"""
import argparse, os, re, sys, time
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from nbdev.config import get_config

def flags_of(cell):
    "The `#| name` directives of a code cell's first lines."
    return {m.group(1) for m in re.finditer(r'^#\|\s*([\w-]+)', cell.source, flags=re.M)}

def shrink_png(b64, max_width=560, colours=192):
    "A base64 PNG scaled down to `max_width` pixels wide and reduced to `colours` colours, if that makes it smaller."
    import base64, io
    from PIL import Image
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    if im.width > max_width: im = im.resize((max_width, round(im.height*max_width/im.width)), Image.LANCZOS)
    im = im.convert('RGB').quantize(colours)
    out = io.BytesIO(); im.save(out, format='PNG', optimize=True)
    small = base64.b64encode(out.getvalue()).decode()
    return small if len(small) < len(b64) else b64

def shrink_figures(nb):
    "Keep the committed notebook light: every PNG output at most 560 px wide, in a small palette."
    for cell in nb.cells:
        for o in cell.get('outputs', []):
            data = o.get('data', {})
            if 'image/png' in data:
                png = data['image/png']
                data['image/png'] = shrink_png(png if isinstance(png, str) else ''.join(png))

def execute(path, run_flags):
    skip = set(get_config().tst_flags.split()) - {'cuda'} - set(run_flags)
    nb = read_nb(path)
    for cell in nb.cells:   # execnb keeps a cell's old outputs when the cell now prints nothing: start from none
        if cell.cell_type == 'code': cell.outputs, cell.execution_count = [], None
    def _skip(cell): return cell.cell_type != 'code' or bool(flags_of(cell) & skip) or 'nbdev_export(' in cell.source
    start = time.time()
    shell = CaptureShell(path)
    cwd = os.getcwd()
    os.chdir(Path(path).parent)
    try: shell.run_all(nb, exc_stop=True, preproc=_skip)
    finally: os.chdir(cwd)
    shrink_figures(nb)
    write_nb(nb, path)
    print(f'{path}: executed in {time.time()-start:.0f} s')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('paths', nargs='+')
    p.add_argument('--flags', default='', help='space-separated test flags whose cells should run too')
    args = p.parse_args()
    os.environ.setdefault('VISIONCOURSE_QUICK', '1')
    for path in args.paths: execute(Path(path).resolve(), args.flags.split())
