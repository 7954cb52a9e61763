"""Copy a cut of the course's six sample datasets, each in its own layout, so any check can be run on data smaller (or
as large) as the samples: `VISIONCOURSE_DATA=DEST` then makes the course read `DEST/<name>` first.

    python tools/cut_data.py SOURCE DEST [--pets-per-breed 3] [--pascal-rows 32] [--pascal-test 10] [--biwi-frames 4]
                                         [--planet-chips 300] [--camvid-images 40] [--imdb-rows 200] [--only pets ...]

SOURCE holds the datasets as fastai unpacks them (`pets/images`, `pascal_2007/train.csv`, ...), e.g. ../shared/realdata.
Each size left out copies that dataset whole (a same-size copy). What each size keeps, in the files' sorted order:
  pets            the first N images of each breed (breed = the file name before `_<number>.jpg`)
  pascal_2007     the first N rows of train.csv (with rows of both `is_valid` values), their images and annotations,
                  and the first M images of test/
  biwi_head_pose  the first N frames (image and pose) of each person, with the person's .cal files and the .obj files
  planet_sample   the first N rows of labels.csv and their chips
  camvid_tiny     the first N images, their labels and codes.txt (and valid.txt, cut to the images kept, if present)
  imdb_sample     the first N rows of texts.csv (with rows of both `is_valid` values)
`cut(name, source, dest, n)` does the same from Python (tests/conftest.py's `data_cut` fixture uses it)."""
import argparse, csv, re, shutil
from pathlib import Path

DATASETS = ('pets', 'pascal_2007', 'biwi_head_pose', 'planet_sample', 'camvid_tiny', 'imdb_sample')

def _copy(src, dst):
    "Copy the file `src` to `dst`, making `dst`'s folder."
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)

def _read_csv(fn):
    "The header and rows of the CSV file `fn`."
    with open(fn, newline='', encoding='utf-8') as f: rows = list(csv.reader(f))
    return rows[0], rows[1:]

def _write_csv(fn, header, rows):
    fn.parent.mkdir(parents=True, exist_ok=True)
    with open(fn, 'w', newline='', encoding='utf-8') as f: csv.writer(f).writerows([header, *rows])

def first_rows_both_splits(header, rows, n, col='is_valid'):
    "The first `n` of `rows`, where a value of column `col` missing from them replaces the last row of a value kept twice."
    if n is None or n >= len(rows): return rows
    i, keep = header.index(col), list(range(n))
    for v in dict.fromkeys(r[i] for r in rows):           # each value (False, True), in order of first appearance
        if any(rows[j][i] == v for j in keep): continue
        if n < 2: raise ValueError(f'a cut of {n} row cannot hold both values of {col}')
        keep.remove(next(j for j in reversed(keep) if sum(rows[k][i] == rows[j][i] for k in keep) > 1))
        keep.append(next(j for j, r in enumerate(rows) if r[i] == v))
    return [rows[j] for j in sorted(keep)]

def _extras(src, dst, skip):
    "Copy the top-level files of `src` (README.txt, .obj files, ...) not named in `skip`, noting the cut in README.txt."
    for f in src.iterdir():
        if f.is_file() and f.name not in skip: _copy(f, dst/f.name)
    readme = dst/'README.txt'
    if readme.exists(): readme.write_text(f'A CUT of this sample made by tools/cut_data.py from {src.name}/: '
                                          'the counts below are the source\'s, not this copy\'s.\n' + readme.read_text())

def cut_pets(src, dst, n=None):
    "The first `n` images of each breed."
    seen = {}
    for f in sorted((src/'images').glob('*.jpg')):
        m = re.match(r'(.+)_\d+\.jpg$', f.name)
        if m is None: continue
        breed = m.group(1)
        if n is None or seen.get(breed, 0) < n: _copy(f, dst/'images'/f.name); seen[breed] = seen.get(breed, 0) + 1
    if (src/'PROVENANCE.csv').exists(): _provenance(src, dst)
    _extras(src, dst, {'PROVENANCE.csv'})

def _provenance(src, dst):
    "PROVENANCE.csv cut to the files copied (its first column is the file's path, with or without the folder)."
    header, rows = _read_csv(src/'PROVENANCE.csv')
    kept = [r for r in rows if (dst/r[0]).exists() or any((dst/d/r[0]).exists() for d in ('images', 'train', 'test'))]
    _write_csv(dst/'PROVENANCE.csv', header, kept)

def cut_pascal(src, dst, n=None, n_test=None):
    "The first `n` rows of train.csv (both splits kept) with their images and annotations, and the first `n_test` test images."
    header, rows = _read_csv(src/'train.csv')
    rows = first_rows_both_splits(header, rows, n)
    _write_csv(dst/'train.csv', header, rows)
    for r in rows:
        _copy(src/'train'/r[0], dst/'train'/r[0])
        for ann in src.glob(f'*/{Path(r[0]).stem}.xml'): _copy(ann, dst/ann.parent.name/ann.name)
    for f in sorted((src/'test').iterdir())[:n_test]:
        _copy(f, dst/'test'/f.name)
        for ann in src.glob(f'*/{f.stem}.xml'): _copy(ann, dst/ann.parent.name/ann.name)
    if (src/'PROVENANCE.csv').exists(): _provenance(src, dst)
    _extras(src, dst, {'train.csv', 'PROVENANCE.csv'})

def cut_biwi(src, dst, n=None):
    "The first `n` frames of each person (image and pose), with the person's .cal files; the .obj files."
    for person in sorted(d for d in src.iterdir() if d.is_dir()):
        for f in person.glob('*.cal'): _copy(f, dst/person.name/f.name)
        for img in sorted(person.glob('frame_*_rgb.*'))[:n]:
            _copy(img, dst/person.name/img.name)
            pose = person/img.name.replace('_rgb', '_pose').replace(img.suffix, '.txt')
            if pose.exists(): _copy(pose, dst/person.name/pose.name)
    _extras(src, dst, set())

def cut_planet(src, dst, n=None):
    "The first `n` rows of labels.csv and their chips."
    header, rows = _read_csv(src/'labels.csv')
    rows = rows[:n]
    _write_csv(dst/'labels.csv', header, rows)
    for r in rows: _copy(src/'train'/f'{r[0]}.jpg', dst/'train'/f'{r[0]}.jpg')
    _extras(src, dst, {'labels.csv'})

def cut_camvid(src, dst, n=None):
    "The first `n` images with their labels (`<name>_P<ext>`), codes.txt, and valid.txt cut to the images kept."
    imgs = sorted((src/'images').iterdir())[:n]
    for f in imgs:
        _copy(f, dst/'images'/f.name)
        _copy(src/'labels'/f'{f.stem}_P{f.suffix}', dst/'labels'/f'{f.stem}_P{f.suffix}')
    if (src/'valid.txt').exists():
        names = {f.name for f in imgs}
        (dst/'valid.txt').write_text(''.join(l + '\n' for l in (src/'valid.txt').read_text().split() if l in names))
    _extras(src, dst, {'valid.txt'})

def cut_imdb(src, dst, n=None):
    "The first `n` rows of texts.csv, with rows of both `is_valid` values."
    header, rows = _read_csv(src/'texts.csv')
    _write_csv(dst/'texts.csv', header, first_rows_both_splits(header, rows, n))
    _extras(src, dst, {'texts.csv'})

CUTTERS = dict(pets=cut_pets, pascal_2007=cut_pascal, biwi_head_pose=cut_biwi, planet_sample=cut_planet,
               camvid_tiny=cut_camvid, imdb_sample=cut_imdb)

def cut(name, source, dest, n=None, **kwargs):
    "Copy a cut of dataset `name` from `source/name` to `dest/name` (`n`: its size, see above; None copies it whole); return it."
    src, dst = Path(source)/name, Path(dest)/name
    if not src.is_dir(): raise FileNotFoundError(f'{src}: no such dataset folder')
    if n is None and all(v is None for v in kwargs.values()): shutil.copytree(src, dst, dirs_exist_ok=True)  # byte for byte
    else: dst.mkdir(parents=True, exist_ok=True); CUTTERS[name](src, dst, n, **kwargs)
    return dst

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='\n'.join(__doc__.splitlines()[2:]))
    p.add_argument('source', type=Path); p.add_argument('dest', type=Path)
    p.add_argument('--pets-per-breed', type=int); p.add_argument('--pascal-rows', type=int)
    p.add_argument('--pascal-test', type=int); p.add_argument('--biwi-frames', type=int, help='frames per person')
    p.add_argument('--planet-chips', type=int); p.add_argument('--camvid-images', type=int)
    p.add_argument('--imdb-rows', type=int)
    p.add_argument('--only', nargs='+', choices=DATASETS, default=list(DATASETS), metavar='NAME',
                   help=f'datasets to copy (default: all: {" ".join(DATASETS)})')
    a = p.parse_args(argv)
    sizes = dict(pets=dict(n=a.pets_per_breed), pascal_2007=dict(n=a.pascal_rows, n_test=a.pascal_test),
                 biwi_head_pose=dict(n=a.biwi_frames), planet_sample=dict(n=a.planet_chips),
                 camvid_tiny=dict(n=a.camvid_images), imdb_sample=dict(n=a.imdb_rows))
    missing = [n for n in a.only if not (a.source/n).is_dir()]
    if missing: p.error(f'{a.source} has no folder {", ".join(missing)}')
    for name in a.only:
        dst = cut(name, a.source, a.dest, **sizes[name])
        files = [f for f in dst.rglob('*') if f.is_file()]
        print(f'{name}: {len(files)} files, {sum(f.stat().st_size for f in files)/1e6:.1f} MB in {dst}')

if __name__ == '__main__': main()
