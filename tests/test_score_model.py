"""``score_model:``: a proxy scores the data ("Selection via Proxy"), the model trains on the coreset, and the
scoring run is charged the proxy's FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import TINY, run_cli

import lightning_prune as lp
from lightning_prune.pipeline.cost import forward_flops, proxy_cost

PROXY = """
score_model:
  class_path: lightning_prune.models.Classifier
  init_args:
    backbone:
      class_path: lightning_prune.models.SmallCNN
      init_args: {num_classes: 10, width: 2}
    lr: 0.1
"""


def test_forward_flops_counts_a_smaller_backbone_as_cheaper():
    inputs = torch.zeros(8, 1, 8, 8)
    small, large = (forward_flops(lp.Classifier(lp.SmallCNN(width=w)), inputs) for w in (2, 4))
    assert small is not None and large is not None and 0 < small < large
    assert forward_flops(lp.Classifier(lp.SmallCNN(width=2)), torch.zeros(8, 5)) is None  # a forward that fails


def test_proxy_cost_is_charged_in_the_models_currency():
    record = {"samples_forwarded": 1000, "epochs": 2, "seconds": 1.5}
    assert proxy_cost(record, 0.25) == {
        "samples_forwarded": 250,
        "epochs": 2,
        "seconds": 1.5,
        "proxy_samples_forwarded": 1000,
        "proxy_flops_ratio": 0.25,
    }


@pytest.mark.slow
def test_a_proxy_scores_the_data_and_is_charged_its_flops(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY + PROXY)
    out = tmp_path / "run"
    methods = "[{name: el2n, args: {epochs: 2}}]"
    run_cli("run", config, out, "--methods", methods)
    scores = lp.Scores.load(out / "scores" / "el2n.npz")
    proxy_width = scores.hparams["scoring_run"]["score_model"]["init_args"]["backbone"]["init_args"]["width"]
    assert proxy_width == 2  # the score file records the proxy it was made with
    cost = json.loads((out / "costs" / "score-el2n.json").read_text())
    inputs = torch.zeros(4, 1, 8, 8)
    ratio = forward_flops(lp.Classifier(lp.SmallCNN(width=2)), inputs) / forward_flops(
        lp.Classifier(lp.SmallCNN(width=4)), inputs
    )
    assert cost["proxy_flops_ratio"] == pytest.approx(ratio, rel=1e-6) and ratio < 0.5
    assert cost["proxy_samples_forwarded"] == 3 * 1078  # score_epochs: 3 over the full training set
    assert cost["samples_forwarded"] == round(3 * 1078 * ratio)
    # x one full-data training (one epoch of the model): the proxy's three epochs, then half the data once
    report = json.loads((out / "report.json").read_text())
    assert report["total_cost"]["el2n"]["0.50"]["relative"] == pytest.approx(3 * ratio + 0.5, abs=0.01)
    # another proxy is another scoring run: refused, not reused
    capsys.readouterr()
    config.write_text(TINY + PROXY.replace("width: 2", "width: 3"))
    with pytest.raises(SystemExit):
        run_cli("run", config, out, "--methods", methods)
    assert "score_model" in capsys.readouterr().err


def test_a_proxy_with_fewer_classes_than_the_data_is_refused_before_training(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY + PROXY.replace("num_classes: 10", "num_classes: 5"))
    with pytest.raises(SystemExit):
        run_cli("select", config, tmp_path / "run", "--methods", "[{name: el2n, args: {epochs: 1}}]")
    err = capsys.readouterr().err
    assert "The score_model outputs 5 class scores" in err and "to 10" in err
    assert not (tmp_path / "run" / "scores").exists()
