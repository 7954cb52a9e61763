"""`course_learner` across modules (a U-Net on CamVid's `DataLoaders`), and every problem's dataset present here.
`arch_fn` and the fallback for `vision_learner` are tested beside their code in nbs/00b_learner.ipynb."""
import pytest
from fastai.vision.all import unet_learner, Normalize
from visioncourse.learner import course_learner
from visioncourse.problems import PROBLEMS, get_problem

def test_course_learner_makes_a_unet_without_weights(capsys):
    from visioncourse.camvid import camvid_dls
    from visioncourse.data import dataset_path
    dls = camvid_dls(dataset_path('camvid_tiny'), size=(32, 40), bs=2, n_items=6)
    learn = course_learner(dls, 'resnet18', pretrained=False, make=unet_learner)
    assert type(learn.model).__name__ == 'DynamicUnet' and learn.pretrained is False
    assert any(isinstance(t, Normalize) for t in dls.after_batch.fs)
    assert capsys.readouterr().out == ''   # pretrained=False asked for: nothing to report

@pytest.mark.parametrize('name', list(PROBLEMS))
def test_problem_dataset_is_one_the_course_knows_and_has(name):
    from visioncourse.data import DATASETS, dataset_path
    p = get_problem(name)
    assert p.name == name and p.summary and p.dataset in DATASETS
    assert dataset_path(p.dataset, download=False).is_dir()   # its sample is here, in fastai's layout
