"""Tests for eval.classify, vljepa.tasks and vljepa.eval_data on a fake model, sklearn references and tiny videos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_fake_model import FakeVLJepa, fake_clips
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, top_k_accuracy_score

from eval.classify import (
    AttentiveProbeConfig,
    LinearProbeConfig,
    classification_metrics,
    linear_probe,
    load_label_list,
    plot_confusion,
    train_attentive_probe,
)
from vljepa.eval_data import from_folder, from_manifest, load_labelled
from vljepa.processing import VideoTransform
from vljepa.synthetic import class_names, make_clip_dataset, write_video
from vljepa.tasks import class_embeddings, multiple_choice_accuracy, zero_shot_eval

CLASSES = class_names()


def test_zero_shot_with_templates_is_perfect_on_the_fake_model():
    model = FakeVLJepa(CLASSES)
    labels = [i % len(CLASSES) for i in range(30)]
    m = zero_shot_eval(model, CLASSES, labels, pixel_values=fake_clips(labels),
                       templates=("a video of a digit that {}", "{}"))
    assert m["top1"] == 100.0 and m["top5"] == 100.0 and m["mean_class_accuracy"] == 100.0
    assert np.array_equal(np.array(m["confusion"]), np.diag(np.bincount(labels)))
    wrong = zero_shot_eval(model, CLASSES, [(y + 1) % len(CLASSES) for y in labels], pixel_values=fake_clips(labels))
    assert wrong["top1"] == 0.0


def test_template_ensembling_is_mean_of_unit_embeddings():
    model = FakeVLJepa(CLASSES)
    templates = ("a photo of {}", "{} happens")
    got = class_embeddings(model, CLASSES[:3], templates)
    per = [F.normalize(model.encode_text([t.format(c) for c in CLASSES[:3]]), dim=-1) for t in templates]
    assert torch.allclose(got, F.normalize((per[0] + per[1]) / 2, dim=-1), atol=1e-6)
    with pytest.raises(ValueError, match="must each contain"):
        class_embeddings(model, CLASSES, ("no slot",))


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(200, 7)), rng.integers(7, size=200)
    names = [f"c{i}" for i in range(7)]
    m = classification_metrics(scores, labels, names, ks=(1, 3, 5))
    for k in (1, 3, 5):
        assert m[f"top{k}"] == pytest.approx(100 * top_k_accuracy_score(labels, scores, k=k, labels=range(7)))
    cm = confusion_matrix(labels, scores.argmax(1), labels=range(7))
    assert np.array_equal(np.array(m["confusion"]), cm)
    per_class = 100 * cm.diagonal() / cm.sum(1)
    assert m["mean_class_accuracy"] == pytest.approx(per_class.mean())
    assert m["per_class"]["c3"] == pytest.approx(per_class[3])


def test_confusion_plot_written(tmp_path):
    path = plot_confusion([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multiple_choice_accuracy():
    model = FakeVLJepa(CLASSES)
    labels = [0, 4, 6]
    candidates = [[CLASSES[1], CLASSES[0]], [CLASSES[4], CLASSES[5], CLASSES[2]], [CLASSES[6], CLASSES[7]]]
    m = multiple_choice_accuracy(model, ["what happens?"] * 3, candidates, [1, 0, 1], pixel_values=fake_clips(labels))
    assert m["chosen"] == [1, 0, 0] and m["accuracy"] == pytest.approx(200 / 3)


def test_linear_probe_sweeps_C_and_matches_sklearn_refit():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16)) * 2
    y = rng.integers(4, size=300)
    x = centres[y] + rng.normal(size=(300, 16))
    names = ["a", "b", "c", "d"]
    cfg = LinearProbeConfig(Cs=[0.001, 0.1, 10.0])
    out = linear_probe(x[:200], y[:200], x[200:], y[200:], names, cfg, val_x=x[200:250], val_y=y[200:250])
    assert set(out["val_accuracy"]) == {"0.001", "0.1", "10.0"} and out["best_C"] in cfg.Cs
    assert out["test"]["top1"] > 85
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=out["best_C"], max_iter=2000, random_state=0))
    ref.fit(np.concatenate([x[:200], x[200:250]]), np.concatenate([y[:200], y[200:250]]))
    assert out["test"]["top1"] == pytest.approx(100 * ref.score(x[200:].astype(np.float32), y[200:]), abs=1e-6)
    auto = linear_probe(x[:200], y[:200], x[200:], y[200:], names, cfg)  # stratified validation split
    assert auto["test"]["top1"] > 85


def test_attentive_probe_finds_the_informative_token():
    torch.manual_seed(0)
    n, tokens, dim, classes = 160, 6, 16, 3
    y = torch.randint(classes, (n,))
    codes = torch.randn(classes, dim) * 3
    x = torch.randn(n, tokens, dim)
    where = torch.randint(tokens, (n,))  # the class signal sits in one random token per clip
    x[torch.arange(n), where] += codes[y]
    probe, out = train_attentive_probe(x[:120], y[:120], x[120:], y[120:], ["a", "b", "c"],
                                       AttentiveProbeConfig(epochs=25, lr=3e-3, batch_size=40))
    assert out["losses"][-1] < 0.5 * out["losses"][0]
    assert out["test"]["top1"] > 80
    assert probe(x[:2]).shape == (2, classes)


def test_label_lists():
    assert len(load_label_list("ucf101")) == 101 and load_label_list("ucf101")[0] == "ApplyEyeMakeup"
    assert len(load_label_list("kinetics400")) == 400 and load_label_list("kinetics400")[0] == "abseiling"
    assert len(load_label_list("ssv2")) == 174
    for name in ("ucf101", "kinetics400", "ssv2"):
        assert len(set(load_label_list(name))) == len(load_label_list(name))
    with pytest.raises(ValueError, match="no bundled"):
        load_label_list("hmdb")


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for i, clip in enumerate(make_clip_dataset(4, n_frames=6, size=32, seed=0)):
        write_video(root / "tree" / clip["label_name"] / f"v{i}.mp4", clip["frames"], fps=4)
    return root


def test_folder_and_manifest_adapters(video_tree):
    data = from_folder(video_tree / "tree")
    assert data.class_names == sorted(data.class_names) and len(data) == 4
    rows = [{"path": str(p), "label": data.class_names[y]} for p, y in zip(data.paths, data.labels)]
    (video_tree / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (video_tree / "m.csv").write_text("path,label\n" + "\n".join(f"{r['path']},{r['label']}" for r in rows))
    for manifest in ("m.jsonl", "m.csv"):
        again = load_labelled(video_tree / manifest)
        assert again.paths == data.paths and again.labels == data.labels
    (video_tree / "ids.csv").write_text("path,label\n" + "\n".join(f"{p},{i}" for i, p in enumerate(data.paths)))
    assert from_manifest(video_tree / "ids.csv", CLASSES).labels == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="class-name list"):
        from_manifest(video_tree / "ids.csv")
    with pytest.raises(ValueError, match="not in the given label list"):
        from_folder(video_tree / "tree", ["something else"])
    transform = VideoTransform(crop_size=16, resize_size=16)
    batches = list(data.clips(transform, num_frames=4, batch_size=3))
    assert [b[0].shape for b in batches] == [(3, 4, 3, 16, 16), (1, 4, 3, 16, 16)]
    assert torch.cat([b[1] for b in batches]).tolist() == data.labels
