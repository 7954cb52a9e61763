"""`FitProbe`: a callback that every `Learner` made inside `probing()` gets (through fastai's `defaults.callbacks`), to
see from the outside what a run did: which parameters each fit changed, which were trainable, the learning rate of
each parameter group at every training batch, and the normalisation of every batch the learner saw. (`get_preds` and
`validate` run `before_fit`/`after_fit` too: they are recorded as fits that trained nothing.)"""
import contextlib
from types import SimpleNamespace
import torch
from torch import nn
from fastai.callback.core import Callback
from fastai.callback.schedule import LRFinder
from fastai.data.transforms import Normalize
from fastai.torch_core import defaults

NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.InstanceNorm2d)
RUN = SimpleNamespace(fits=[], batches=[], first=[], last={}, on=False)   # filled while probing, kept off the learners
# (an exported learner keeps its FitProbe, small and idle once `probing()` has ended)

def _snapshot(model): return {n: p.detach().clone() for n, p in model.named_parameters()}

def _norm(dl):
    "The (mean, std) lists of the `Normalize` in `dl`'s `after_batch`, `None` if it has none, 'batches' for ready-made batches."
    if not hasattr(dl, 'after_batch'): return 'batches'   # `show_results` passes `get_preds` a list of batches from `dls.valid`
    ts = [t for t in dl.after_batch.fs if isinstance(t, Normalize)]
    return None if not ts else (ts[0].mean.flatten().tolist(), ts[0].std.flatten().tolist())

class FitProbe(Callback):
    "Record each fit and each batch of the learner it is on, into `RUN`."
    order = 99   # after ParamScheduler has set the batch's learning rates
    def before_fit(self):
        self.rec = self.start = None
        if not RUN.on: return
        m = self.learn.model
        groups = self.learn.opt.param_lists if self.learn.opt is not None else []   # no optimizer yet: `get_preds` first
        group = {id(p): i for i, ps in enumerate(groups) for p in ps}
        norm = {f'{mn}.{pn}' if mn else pn for mn, mod in m.named_modules() if isinstance(mod, NORM_LAYERS)
                for pn, _ in mod.named_parameters(recurse=False)}
        self.rec = dict(learner=id(self.learn), model=type(m).__name__, n_epoch=self.n_epoch, lrs=[],
                        finder=any(isinstance(c, LRFinder) for c in self.learn.cbs),
                        group={n: group.get(id(p)) for n, p in m.named_parameters()}, n_groups=len(groups),
                        trainable={n: p.requires_grad for n, p in m.named_parameters()}, norm_params=norm)
        RUN.fits.append(self.rec)
    def before_batch(self):
        if not RUN.on: return
        RUN.batches.append(dict(learner=id(self.learn), training=self.training, norm=_norm(self.dl),
                                shape=tuple(self.xb[0].shape) if len(self.xb) else None))
        if not self.training or getattr(self, 'rec', None) is None: return
        if self.start is None:   # the weights the fit starts from (nothing has changed them since before_fit)
            self.start = _snapshot(self.learn.model)
            self.rec['start_sums'] = {n: t.double().sum().item() for n, t in self.start.items()}
            if id(self.learn) not in {k for k, _, _ in RUN.first}:
                RUN.first.append((id(self.learn), self.rec['model'], self.start))
        self.rec['lrs'].append([h['lr'] for h in self.learn.opt.hypers])
    def after_fit(self):
        if getattr(self, 'rec', None) is None: return
        self.rec['trained'] = self.start is not None   # False for `get_preds` and `validate`, which run before_fit too
        self.rec['changed'] = set()
        if self.start is not None:
            end = _snapshot(self.learn.model)
            self.rec['changed'] = {n for n, t in end.items() if not torch.equal(t, self.start[n])}
            RUN.last[id(self.learn)] = end
        self.start = self.rec = None

@contextlib.contextmanager
def probing():
    "Give every `Learner` created in the block a `FitProbe`; yield `RUN`, emptied first."
    RUN.fits.clear(); RUN.batches.clear(); RUN.first.clear(); RUN.last.clear()
    defaults.callbacks.append(FitProbe)
    RUN.on = True
    try: yield RUN
    finally: defaults.callbacks.remove(FitProbe); RUN.on = False
