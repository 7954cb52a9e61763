"""Write a full-layout IMDB (fastai's `URLs.IMDB`, the `aclImdb` layout) from an IMDB_SAMPLE-style `texts.csv`.

    python tools/imdb_full_layout.py DEST [--csv texts.csv] [--unsup N] [--rows N]

`DEST` becomes `train/neg`, `train/pos`, `test/neg`, `test/pos` (one `<id>_<rating>.txt` file per review, the
folder is the label, `is_valid` rows go to `test/`) and `unsup/` (N unlabelled reviews, copies of training reviews
without their label, as the full dataset's 50,000 unlabelled ones sit beside the labelled ones). Name the folder as
fastai does, `.../imdb`, so that `VISIONCOURSE_DATA=...` finds it: `python tools/imdb_full_layout.py /tmp/full/imdb`.
`--rows N` keeps N rows of the CSV, the first ones of each split in the file's proportions (a smaller full
layout; for a cut in the sample's own layout, `tools/cut_data.py --only imdb_sample --imdb-rows N`). Refuses to
write into a folder that is not empty: nothing there is overwritten.
"""
import argparse, csv
from pathlib import Path

LABELS = {'negative': 'neg', 'positive': 'pos'}
BOOL = {'true': True, 'false': False, '1': True, '0': False}


def default_csv():
    "The sample's texts.csv as the course finds it (`dataset_path('imdb_sample')`), else the repository's sample mirror."
    try:
        from visioncourse.data import dataset_path
        return dataset_path('imdb_sample', download=False)/'texts.csv'
    except Exception: return Path(__file__).resolve().parents[2]/'shared'/'realdata'/'imdb_sample'/'texts.csv'


def read_rows(fn, n=None):
    "The rows of `fn` (label, text, is_valid), checked; `n` keeps the first `n`. Raises one line naming the file."
    fn = Path(fn)
    if not fn.is_file(): raise SystemExit(f"{fn}: file not found")
    with open(fn, newline='', encoding='utf-8') as f: rows = list(csv.DictReader(f))
    if rows and not {'label', 'text', 'is_valid'} <= set(rows[0]): raise SystemExit(f"{fn}: needs the columns label, text, is_valid")
    for i, r in enumerate(rows, start=1):
        if r['label'] not in LABELS: raise SystemExit(f"{fn}: row {i} has label {r['label']!r}, not one of {', '.join(LABELS)}")
        if str(r['is_valid']).strip().lower() not in BOOL: raise SystemExit(f"{fn}: row {i} has is_valid {r['is_valid']!r}")
    rows = [(r['label'], r['text'], BOOL[str(r['is_valid']).strip().lower()]) for r in rows]
    if n:   # the first rows of each split, in the file's proportions
        n_valid = max(1, round(n*sum(v for *_, v in rows)/len(rows)))
        rows = [r for r in rows if not r[2]][:n-n_valid] + [r for r in rows if r[2]][:n_valid]
    if all(v for *_, v in rows) or not any(v for *_, v in rows):
        raise SystemExit(f"{fn}: the rows kept need both training and validation reviews")
    return rows


def _empty_dest(dest):
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()): raise SystemExit(f"{dest}: not empty; choose a new folder (nothing was written)")
    return dest


def write_full(rows, dest, unsup=200):
    "Write `rows` in the full IMDB layout under `dest`, and `unsup` training texts again, unlabelled, in `dest/unsup`."
    dest = _empty_dest(dest)
    for split in ('train', 'test'):
        for lbl in LABELS.values(): (dest/split/lbl).mkdir(parents=True, exist_ok=True)
    (dest/'unsup').mkdir(exist_ok=True)
    counts = {}
    for i, (label, text, valid) in enumerate(rows):
        split, lbl = 'test' if valid else 'train', LABELS[label]
        rating = 8 if lbl == 'pos' else 3          # aclImdb names files <id>_<rating>; the sample keeps no rating
        (dest/split/lbl/f'{i}_{rating}.txt').write_text(text, encoding='utf-8')
        counts[f'{split}/{lbl}'] = counts.get(f'{split}/{lbl}', 0) + 1
    train = [text for label, text, valid in rows if not valid]
    for j, text in enumerate(train[:unsup]): (dest/'unsup'/f'{j}_0.txt').write_text(text, encoding='utf-8')
    counts['unsup'] = min(unsup, len(train))
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('dest', type=Path, help="the folder to write, e.g. /tmp/full/imdb (fastai's name for the full dataset)")
    p.add_argument('--csv', type=Path, default=None, help="an IMDB_SAMPLE-style texts.csv (default: the course's sample)")
    p.add_argument('--unsup', type=int, default=200, help='how many training texts to copy, unlabelled, into unsup/ (default 200)')
    p.add_argument('--rows', type=int, default=None, help='keep N rows: the first ones of each split, in the proportions of the file')
    a = p.parse_args(argv)
    rows = read_rows(a.csv or default_csv(), a.rows)
    counts = write_full(rows, a.dest, a.unsup)
    print(f"{a.dest}: " + ', '.join(f'{k} {v}' for k, v in counts.items()))


if __name__ == '__main__': main()
