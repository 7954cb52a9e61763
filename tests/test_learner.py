"""`course_learner` across modules (a U-Net on CamVid's `DataLoaders`). `arch_fn` and the fallback for `vision_learner`
are tested beside their code in nbs/00b_learner.ipynb; each problem's dataset in nbs/00c_problems.ipynb (a known dataset)
and tests/test_data.py (present here, in its layout)."""
from fastai.vision.all import unet_learner, Normalize
from visioncourse.learner import course_learner

def test_course_learner_makes_a_unet_without_weights(capsys):
    from visioncourse.camvid import camvid_dls
    from visioncourse.data import dataset_path
    dls = camvid_dls(dataset_path('camvid_tiny'), size=(32, 40), bs=2, n_items=6)
    learn = course_learner(dls, 'resnet18', pretrained=False, make=unet_learner)
    assert type(learn.model).__name__ == 'DynamicUnet' and learn.pretrained is False
    assert any(isinstance(t, Normalize) for t in dls.after_batch.fs)
    assert capsys.readouterr().out == ''   # pretrained=False asked for: nothing to report
