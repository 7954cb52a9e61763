"""Copy a cut of the course's six sample datasets, each in its own layout, so any check can be run on data smaller (or
as large) as the samples: `VISIONCOURSE_DATA=DEST` then makes the course read `DEST/<name>` first.

    python tools/cut_data.py SOURCE DEST [--pets-per-breed 3] [--pascal-rows 32] [--pascal-test 10] [--biwi-frames 4]
        [--planet-chips 300] [--camvid-images 40] [--imdb-rows 200] [--imdb-words 40] [--only pets imdb_sample ...]

SOURCE holds the datasets as fastai unpacks them (`pets/images`, `pascal_2007/train.csv`, ...), e.g. ../shared/realdata.
Each size left out copies that dataset whole (a same-size copy). What each size keeps, in the files' sorted order:
  pets            the first N images of each breed (breed = the file name before `_<number>.jpg`)
  pascal_2007     N rows of train.csv: the first of each `is_valid` value, in the source's proportions; their images
                  and annotations; the first M images of test/
  biwi_head_pose  the first N frames (image and pose) of each person, with the person's .cal files and the .obj files
  planet_sample   the first N rows of labels.csv and their chips
  camvid_tiny     N images, their labels and codes.txt (with a valid.txt: the first of each split, in its share)
  imdb_sample     N rows of texts.csv: the first of each `is_valid` value, in the source's proportions (each review
                  cut to its first W words with --imdb-words W)
`cut(name, source, dest, n)` does the same from Python (tests/helpers.py's `cut`, behind conftest.py's `data_cut`)."""
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
    "`n` of `rows`: of each value of column `col`, its first rows, in proportion to its share of `rows` (at least one)."
    if n is None or n >= len(rows): return rows
    i = header.index(col)
    groups = {}
    for j, r in enumerate(rows): groups.setdefault(r[i], []).append(j)
    if n < len(groups): raise ValueError(f'a cut of {n} rows cannot hold each of the {len(groups)} values of {col}')
    sizes = {v: max(1, round(n*len(js)/len(rows))) for v, js in groups.items()}
    biggest = max(sizes, key=sizes.get)
    sizes[biggest] += n - sum(sizes.values())            # rounding: the largest group takes up the difference
    return [rows[j] for j in sorted(j for v, js in groups.items() for j in js[:sizes[v]])]

def _extras(src, dst, skip):
    "Copy the top-level files of `src` (README.txt, .obj files, ...) not named in `skip`, noting the cut in README.txt."
    for f in src.iterdir():
        if f.is_file() and f.name not in skip: _copy(f, dst/f.name)
    readme = dst/'README.txt'
    if readme.exists(): readme.write_text(f'A CUT of this sample made by tools/cut_data.py from {src.name}/: '
                                          'the counts below are the source\'s, not this copy\'s.\n' + readme.read_text())

def cut_pets(src, dst, n=None, breeds=None):
    "The first `n` images of each breed (of `breeds` only, when given)."
    seen = {}
    for f in sorted((src/'images').glob('*.jpg')):
        m = re.match(r'(.+)_\d+\.jpg$', f.name)
        if m is None: continue
        breed = m.group(1)
        if breeds is not None and breed not in breeds: continue
        if n is None or seen.get(breed, 0) < n: _copy(f, dst/'images'/f.name); seen[breed] = seen.get(breed, 0) + 1
    if (src/'PROVENANCE.csv').exists(): _provenance(src, dst)
    _extras(src, dst, {'PROVENANCE.csv'})

def _provenance(src, dst):
    "PROVENANCE.csv cut to the files copied (its first column is the file's path, with or without the folder)."
    header, rows = _read_csv(src/'PROVENANCE.csv')
    kept = [r for r in rows if (dst/r[0]).exists() or any((dst/d/r[0]).exists() for d in ('images', 'train', 'test'))]
    _write_csv(dst/'PROVENANCE.csv', header, kept)

def cut_pascal(src, dst, n=None, n_test=None):
    "`n` rows of train.csv (both splits kept) with their images and annotations, and the first `n_test` test images."
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
    "`n` images with their labels (`<name>_P<ext>`) and codes.txt; with a valid.txt, the first of each split in its share."
    imgs = sorted((src/'images').iterdir())
    listed = set((src/'valid.txt').read_text().split()) if (src/'valid.txt').exists() else None
    if listed is None: imgs = imgs[:n]
    else:   # keep valid.txt's share of the frames, at least one on each side
        rows = first_rows_both_splits(['name', 'valid'], [[f.name, f.name in listed] for f in imgs], n, col='valid')
        imgs = [src/'images'/name for name, _ in rows]
    for f in imgs:
        _copy(f, dst/'images'/f.name)
        _copy(src/'labels'/f'{f.stem}_P{f.suffix}', dst/'labels'/f'{f.stem}_P{f.suffix}')
    if listed is not None: (dst/'valid.txt').write_text(''.join(f.name + '\n' for f in imgs if f.name in listed))
    _extras(src, dst, {'valid.txt'})

def cut_imdb(src, dst, n=None, words=None):
    "`n` rows of texts.csv, of both `is_valid` values (each text cut to its first `words` words, if given)."
    header, rows = _read_csv(src/'texts.csv')
    rows, i = first_rows_both_splits(header, rows, n), header.index('text')
    if words: rows = [r[:i] + [' '.join(r[i].split()[:words])] + r[i+1:] for r in rows]
    _write_csv(dst/'texts.csv', header, rows)
    _extras(src, dst, {'texts.csv'})

CUTTERS = dict(pets=cut_pets, pascal_2007=cut_pascal, biwi_head_pose=cut_biwi, planet_sample=cut_planet,
               camvid_tiny=cut_camvid, imdb_sample=cut_imdb)

def cut(name, source, dest, n=None, **kwargs):
    "Copy a cut of dataset `name` from `source/name` to `dest/name` (`n`: its size, see above; None copies it whole); return it."
    return cut_folder(name, Path(source)/name, Path(dest)/name, n, **kwargs)

def cut_folder(name, src, dst, n=None, **kwargs):
    "Copy a cut of dataset `name` from folder `src` (in `name`'s layout) to folder `dst`; return `dst`."
    src, dst = Path(src), Path(dst)
    if not src.is_dir(): raise FileNotFoundError(f'{src}: no such dataset folder')
    if n is None and all(v is None for v in kwargs.values()): shutil.copytree(src, dst, dirs_exist_ok=True)  # byte for byte
    else: dst.mkdir(parents=True, exist_ok=True); CUTTERS[name](src, dst, n, **kwargs)
    return dst

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 2)[2])
    p.add_argument('source', type=Path); p.add_argument('dest', type=Path)
    p.add_argument('--pets-per-breed', type=int); p.add_argument('--pascal-rows', type=int)
    p.add_argument('--pascal-test', type=int); p.add_argument('--biwi-frames', type=int, help='frames per person')
    p.add_argument('--planet-chips', type=int); p.add_argument('--camvid-images', type=int)
    p.add_argument('--imdb-rows', type=int, help='reviews kept (at least 40: notebook 07 trains quick batches of 32 reviews)'); p.add_argument('--imdb-words', type=int, help='words kept of each review')
    p.add_argument('--only', nargs='+', choices=DATASETS, default=list(DATASETS), metavar='NAME',
                   help=f'datasets to copy (default: all: {" ".join(DATASETS)})')
    a = p.parse_args(argv)
    sizes = dict(pets=dict(n=a.pets_per_breed), pascal_2007=dict(n=a.pascal_rows, n_test=a.pascal_test),
                 biwi_head_pose=dict(n=a.biwi_frames), planet_sample=dict(n=a.planet_chips),
                 camvid_tiny=dict(n=a.camvid_images), imdb_sample=dict(n=a.imdb_rows, words=a.imdb_words))
    missing = [n for n in a.only if not (a.source/n).is_dir()]
    if missing: p.error(f'{a.source} has no folder {", ".join(missing)}')
    for name in a.only:
        dst = cut(name, a.source, a.dest, **sizes[name])
        files = [f for f in dst.rglob('*') if f.is_file()]
        print(f'{name}: {len(files)} files, {sum(f.stat().st_size for f in files)/1e6:.1f} MB in {dst}')

if __name__ == '__main__': main()
