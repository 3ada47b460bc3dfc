"""What a score means (difficulty, easiness, preference) and the strategies that read a direction.

Every collector declares the meaning of its values; ``Scores`` carries it (and its file's manifest);
``auto``, ``easiness()``, CCS's hardness, DUAL's sampling and the validated candidates read it.
"""

from __future__ import annotations

import numpy as np
import pytest
from collector_harness import fit

import lightning_prune as lp
from lightning_prune.collectors.registry import COLLECTORS
from lightning_prune.selection import ScoreFileError, ScoreMeaning, check_select_args, easiness
from lightning_prune.selection.files import build_manifest, write_npz
from lightning_prune.selection.strategies import STRATEGIES, Option, Strategy

DIFFICULTY, EASINESS, PREFERENCE = ScoreMeaning.DIFFICULTY, ScoreMeaning.EASINESS, ScoreMeaning.PREFERENCE


def moderate_like(n: int = 1000, seed: int = 0) -> lp.Scores:
    """Scores as Moderate makes them: minus the gap to the median distance, higher = more moderate = keep."""
    rng = np.random.default_rng(seed)
    distance = rng.gamma(2.0, size=n)
    values = -np.abs(distance - np.median(distance))
    return lp.Scores(
        values,
        "moderate",
        labels=rng.integers(0, 5, n),
        extras={"distance": distance},
        meaning=lp.Moderate.score_meaning,
    )


# ---------------------------------------------------------------------------------------------- the declarations
def test_every_registered_collector_declares_its_meaning_in_its_own_class():
    for name, cls in COLLECTORS.items():
        assert "score_meaning" in vars(cls), f"{cls.__name__} ({name}) must declare score_meaning itself"
    expected = {
        "tdds": DIFFICULTY,
        "forgetting": DIFFICULTY,
        "el2n": DIFFICULTY,
        "grand": DIFFICULTY,
        "aum": DIFFICULTY,
        "dynamic_uncertainty": DIFFICULTY,
        "dual": DIFFICULTY,
        "entropy": DIFFICULTY,
        "herding": PREFERENCE,
        "moderate": PREFERENCE,
    }
    for name, meaning in expected.items():
        assert lp.selection.meaning_of(COLLECTORS[name], {}) == meaning, name
    # Prototypicality's meaning follows keep=: far (hard) or minus the distance (easy)
    for keep, meaning in [("hard", DIFFICULTY), ("easy", EASINESS)]:
        collector = lp.Prototypicality(keep=keep)
        assert lp.selection.meaning_of(type(collector), collector.hparams()) == meaning
    assert lp.selection.meaning_of(lp.Prototypicality, {"keep": "easy"}) == EASINESS


def test_scores_carry_the_meaning_default_difficulty_and_refuse_unknown_ones():
    assert lp.Scores(np.ones(3), "mine").meaning == DIFFICULTY
    # scores named after a collector of the library take its declared meaning unless told otherwise
    assert lp.Scores(np.ones(3), "moderate").meaning == PREFERENCE
    assert lp.Scores(np.ones(3), "prototypicality").meaning == DIFFICULTY  # keep="hard", the default
    assert lp.Scores(np.ones(3), "prototypicality", {"keep": "easy"}).meaning == EASINESS
    assert lp.Scores(np.ones(3), "moderate", meaning="difficulty").meaning == DIFFICULTY
    with pytest.raises(ValueError, match=r"follows the hyper-parameter 'keep'.*Scores\(\.\.\., meaning=\.\.\.\)"):
        lp.Scores(np.ones(3), "prototypicality", {"keep": "middle"})
    assert lp.Scores(np.ones(3), "mine", meaning="preference").meaning == PREFERENCE
    with pytest.raises(ValueError, match=r"meaning='harder' is not one of \['difficulty', 'easiness', 'preference'\]"):
        lp.Scores(np.ones(3), "mine", meaning="harder")


def test_the_meaning_is_saved_in_the_manifest_and_old_files_take_the_collectors_meaning(tmp_path):
    loaded = lp.Scores.load(moderate_like(50).save(tmp_path / "m.npz"))
    assert loaded.meaning == PREFERENCE
    # a file written before meanings were declared: no "meaning" in its manifest
    values = np.linspace(0, 1, 20)
    for method, hparams, meaning in [
        ("moderate", {"centre": "median"}, PREFERENCE),
        ("el2n", {}, DIFFICULTY),
        ("prototypicality", {"keep": "easy"}, EASINESS),
    ]:
        manifest = build_manifest("scores", method=method, hparams=hparams, num_samples=20, labels_fingerprint=None)
        write_npz(tmp_path / f"{method}.npz", {"values": values}, manifest)
        assert lp.Scores.load(tmp_path / f"{method}.npz").meaning == meaning, method
    manifest = build_manifest("scores", method="mine", hparams={}, num_samples=20, labels_fingerprint=None)
    write_npz(tmp_path / "mine.npz", {"values": values}, manifest)
    with pytest.raises(ScoreFileError, match=r"'mine'.*Scores.load\(path, meaning="):
        lp.Scores.load(tmp_path / "mine.npz")
    assert lp.Scores.load(tmp_path / "mine.npz", meaning="preference").meaning == PREFERENCE


# ---------------------------------------------------------------------------------------------- the bug of issue 20
def test_auto_at_a_high_ratio_keeps_the_most_moderate_samples():
    scores = moderate_like()
    selection = lp.select(scores, 0.9, strategy="auto")
    kept = scores.values[selection.indices]
    # the reported bug: the kept mean was far below the median (the least moderate samples)
    assert kept.min() >= np.quantile(scores.values, 0.85)
    assert selection.hparams["auto_choice"] == "top" and selection.hparams["score_meaning"] == "preference"


def test_auto_below_80_percent_keeps_the_top_of_preference_scores_too():
    scores = moderate_like()
    selection = lp.select(scores, 0.5, strategy="auto")
    assert scores.values[selection.indices].mean() > np.quantile(scores.values, 0.6)


def test_easiness_of_easiness_scores_is_their_value_and_preference_has_none():
    scores = lp.Scores(np.arange(5.0), "prototypicality", meaning="easiness")
    np.testing.assert_array_equal(easiness(scores).values, np.arange(5.0))
    np.testing.assert_array_equal(easiness(lp.Scores(np.arange(5.0), "el2n")).values, -np.arange(5.0))
    with pytest.raises(ValueError, match=r"moderate scores mean 'preference'.*no easy end"):
        easiness(moderate_like(20))


def test_ccs_hardness_reads_the_meaning():
    values = np.arange(100, dtype=np.float64)
    easy_scores = lp.Scores(values, "prototypicality", labels=np.zeros(100, dtype=np.int64), meaning="easiness")
    selection = lp.select(easy_scores, 0.5, strategy="ccs", ccs_beta=0.2)
    assert selection.hparams["ccs_hardness"] == "low_score" and selection.indices.min() >= 20
    with pytest.raises(ValueError, match=r"ccs_hardness='high_score'.*prototypicality scores mean 'easiness'"):
        lp.select(easy_scores, 0.5, strategy="ccs", ccs_beta=0.2, ccs_hardness="high_score")
    with pytest.raises(ValueError, match=r"ccs_hardness='low_score'.*el2n scores mean 'difficulty'"):
        lp.select(lp.Scores(values, "el2n"), 0.5, strategy="ccs", ccs_beta=0.2, ccs_hardness="low_score")
    with pytest.raises(ValueError, match=r"moderate scores mean 'preference'.*no hard end.*ccs_beta=0"):
        lp.select(moderate_like(100), 0.5, strategy="ccs", ccs_beta=0.2)
    # no cut-off: coverage sampling alone needs no hard end
    assert lp.select(moderate_like(100), 0.5, strategy="ccs").hparams["ccs_hardness"] is None
    # preference scores with an end the user names
    lp.select(moderate_like(100), 0.5, strategy="ccs", ccs_beta=0.2, ccs_hardness="low_score")


def test_dual_sampling_needs_difficulty_scores():
    rng = np.random.default_rng(0)
    scores = lp.Scores(rng.random(100), "mine", extras={"confidence": rng.random(100)}, meaning="preference")
    with pytest.raises(ValueError, match=r"strategy='dual'.*mine scores mean 'preference'"):
        lp.select(scores, 0.5, strategy="dual")


# ---------------------------------------------------------------------------------------------- ties
@pytest.mark.parametrize("strategy", ["topk", "class_balanced"])
def test_tied_scores_on_class_sorted_data_keep_the_classes_balanced(strategy):
    # forgetting counts on easy data: mostly 0, class-sorted as ImageFolder stores it
    labels = np.repeat([0, 1], [148, 250])
    values = np.zeros(398)
    values[[5, 200, 300]] = 2.0
    scores = lp.Scores(values, "forgetting", labels=labels)
    share = []
    for seed in range(20):
        kept = lp.select(scores, 0.5, strategy=strategy, seed=seed).indices
        assert {5, 200, 300} <= set(kept.tolist())
        share.append(np.mean(labels[kept] == 0))
    # class 0 is 148/398 = 0.372 of the data; ascending-index ties kept all of it (148 of 199)
    assert abs(np.mean(share) - 148 / 398) < 0.03
    np.testing.assert_array_equal(
        lp.select(scores, 0.5, strategy=strategy, seed=3).indices,
        lp.select(scores, 0.5, strategy=strategy, seed=3).indices,
    )
    assert not np.array_equal(
        lp.select(scores, 0.5, strategy=strategy, seed=3).indices,
        lp.select(scores, 0.5, strategy=strategy, seed=4).indices,
    )


def test_ccs_hard_cut_and_the_easy_branch_break_ties_at_random():
    labels = np.repeat([0, 1], [100, 100])
    values = np.zeros(200)  # all tied: the hardest 30% are any 60 samples
    scores = lp.Scores(values, "forgetting", labels=labels)
    cut = [lp.select(scores, 0.5, strategy="ccs", ccs_beta=0.3, seed=s).indices for s in range(10)]
    assert np.mean([np.mean(labels[k] == 0) for k in cut]) == pytest.approx(0.5, abs=0.05)
    with pytest.warns(UserWarning, match="carry no labels"):
        easy = lp.select(lp.Scores(values, "forgetting"), 0.9, strategy="easy", seed=1).indices
    assert 0.2 < np.mean(labels[easy] == 0) < 0.8


# ---------------------------------------------------------------------------------------------- open strategies
def test_a_registered_strategy_with_an_option_runs_without_editing_select(monkeypatch):
    def every_nth_plan(scores, prune_ratio, num_keep, seed, options):
        return {"every_offset": options["every_offset"]}

    def every_nth(scores, num_keep, seed, plan):
        return (np.arange(num_keep) + plan["every_offset"]) % len(scores)

    entry = Strategy(
        run=every_nth,
        options=(Option("every_offset", 0, check=lambda value: int(value)),),
        plan=every_nth_plan,
        description="the first samples from an offset",
    )
    monkeypatch.setitem(STRATEGIES, "every", entry)
    scores = lp.Scores(np.arange(10.0), "mine")
    selection = lp.select(scores, 0.5, strategy="every", every_offset=3)
    assert selection.indices.tolist() == [3, 4, 5, 6, 7] and selection.hparams["every_offset"] == 3
    assert lp.select(scores, 0.5, strategy="every").hparams["every_offset"] == 0
    with pytest.raises(ValueError, match=r"strategy 'every' does not take ccs_beta.*takes: every_offset"):
        lp.select(scores, 0.5, strategy="every", ccs_beta=0.1)
    check_select_args("every", {"every_offset": 2})


def test_a_plain_function_in_the_registry_still_works(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "first", lambda scores, num_keep, seed: np.arange(num_keep))
    assert lp.select(lp.Scores(np.arange(10.0), "mine"), 0.5, strategy="first").indices.tolist() == [0, 1, 2, 3, 4]


def test_options_given_to_a_strategy_that_does_not_take_them_are_refused():
    scores = lp.Scores(np.random.default_rng(0).random(100), "el2n", labels=np.arange(100) % 2)
    with pytest.raises(ValueError, match=r"strategy 'auto' does not take ccs_beta.*option of strategy 'ccs'"):
        lp.select(scores, 0.5, strategy="auto", ccs_beta=0.3)
    with pytest.raises(ValueError, match=r"strategy 'topk' does not take dual_cd"):
        lp.select(scores, 0.5, strategy="topk", dual_cd=4.0)
    # auto honours the options of its CCS branch that it does not choose itself
    two_bins = lp.select(scores, 0.6, strategy="auto", ccs_bins=2)
    assert two_bins.hparams["ccs_bins"] == 2


def test_the_recorded_plan_is_the_executed_plan(monkeypatch):
    calls = []

    def drawing_plan(scores, prune_ratio, num_keep, seed, options):
        calls.append(1)  # a plan computed twice would draw two offsets
        return {"offset": len(calls) * 7 % len(scores)}

    def run(scores, num_keep, seed, plan):
        return (np.arange(num_keep) + plan["offset"]) % len(scores)

    monkeypatch.setitem(STRATEGIES, "drawn", Strategy(run=run, plan=drawing_plan))
    selection = lp.select(lp.Scores(np.arange(20.0), "mine"), 0.5, strategy="drawn")
    assert len(calls) == 1 and selection.indices.min() == selection.hparams["offset"] == 7
    # auto's plan drives its run: the CCS branch's recorded cut-off is the one applied
    scores = lp.Scores(np.random.default_rng(0).random(200), "el2n", labels=np.arange(200) % 2)
    chosen = lp.select(scores, 0.7, strategy="auto", seed=2)
    direct = lp.select(scores, 0.7, strategy="ccs", seed=2, ccs_beta=chosen.hparams["ccs_beta"])
    np.testing.assert_array_equal(chosen.indices, direct.indices)


def test_check_select_args_names_the_valid_keys():
    check_select_args("ccs", {"ccs_beta": 0.2, "ccs_bins": 10})
    check_select_args("auto", {"validate": True, "ccs_bins": 2}, allowed=("validate",))
    with pytest.raises(ValueError, match=r"select_args key 'ccs_bin' .*strategy 'ccs' takes: ccs_beta, ccs_bins"):
        check_select_args("ccs", {"ccs_bin": 2})
    with pytest.raises(ValueError, match=r"ccs_bins=0 must be a positive integer"):
        check_select_args("ccs", {"ccs_bins": 0})
    with pytest.raises(ValueError, match=r"Unknown selection strategy 'best'"):
        check_select_args("best", {})


def test_the_import_loop_ratio_aware_strategies_is_gone():
    import ast
    import inspect

    from lightning_prune.selection import ratio_aware

    tree = ast.parse(inspect.getsource(ratio_aware))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "lightning_prune.selection.strategies" not in imported


# ---------------------------------------------------------------------------------------------- defects of the list
def test_a_selection_of_an_empty_data_set_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"num_samples=0.*positive"):
        lp.Selection(indices=np.array([], dtype=np.int64), num_samples=0)


def test_save_and_load_agree_on_the_suffix(tmp_path):
    scores = lp.Scores(np.arange(4.0), "el2n")
    assert scores.save(tmp_path / "x").name == "x.npz"
    np.testing.assert_array_equal(lp.Scores.load(tmp_path / "x").values, scores.values)
    selection = lp.select(scores, 0.5)
    selection.save(tmp_path / "s")
    np.testing.assert_array_equal(lp.Selection.load(tmp_path / "s").indices, selection.indices)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_extras_are_refused(bad):
    margin = np.zeros(10)
    margin[3] = bad
    with pytest.raises(ValueError, match=r"extras\['accumulated_margin'\] contain 1 non-finite"):
        lp.Scores(np.arange(10.0), "aum", extras={"accumulated_margin": margin})


@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.1])
def test_confidence_must_be_a_probability(bad):
    confidence = np.full(20, 0.5)
    confidence[2] = bad
    with pytest.raises(ValueError, match=r"extras\['confidence'\]"):
        scores = lp.Scores(np.arange(20.0), "dual", extras={"confidence": confidence})
        lp.select(scores, 0.5, strategy="dual")


@pytest.mark.parametrize("cd", [float("nan"), float("inf"), -1.0, "4"])
def test_dual_cd_must_be_a_positive_number(cd):
    rng = np.random.default_rng(0)
    scores = lp.Scores(rng.random(50), "dual", extras={"confidence": rng.random(50)})
    with pytest.raises((TypeError, ValueError), match=r"dual_cd=.* must be a positive"):
        lp.select(scores, 0.5, strategy="dual", dual_cd=cd)


@pytest.mark.parametrize(
    "labels",
    [None, np.repeat(np.arange(1000), 5), np.concatenate([[0], np.ones(999, dtype=np.int64)])],
    ids=["no labels", "1000 classes of 5", "a class of 1"],
)
def test_per_class_strategies_fall_back_to_the_whole_data_set_and_say_so(labels):
    n = 5000 if labels is not None and labels.size == 5000 else 1000
    values = np.random.default_rng(0).random(n)
    scores = lp.Scores(values, "el2n", labels=labels)
    for strategy in ("easy", "auto"):  # auto: its easy branch, for a coreset trained for epochs
        with pytest.warns(UserWarning, match=rf"strategy='{strategy}' .*easiest samples of each class.*whole data set"):
            selection = lp.select(scores, 0.9, strategy=strategy)
        assert selection.hparams["within"] == "all"
        assert values[selection.indices].max() <= np.quantile(values, 0.11)


def test_auto_takes_ccs_where_the_top_of_each_class_would_leave_a_class_empty():
    values = np.random.default_rng(0).random(1000)
    singletons = np.arange(1000)  # every sample its own class: half of the classes would keep none
    clean = lp.Scores(values, "el2n", labels=singletons, extras={"predicted_label": singletons})
    chosen = lp.select(clean, 0.5, strategy="auto")
    assert chosen.hparams["auto_choice"] == "ccs" and chosen.hparams["label_noise_evidence"] == 0.0
    np.testing.assert_array_equal(chosen.indices, lp.select(clean, 0.5, strategy="ccs", ccs_beta=0.0).indices)
    fives = np.repeat(np.arange(200), 5)  # half of 200 classes of 5 keeps two or three of each
    kept = lp.select(lp.Scores(values, "el2n", labels=fives, extras={"predicted_label": fives}), 0.5, strategy="auto")
    assert kept.hparams["auto_choice"] == "top_after_cut" and np.unique(fives[kept.indices]).size == 200


def test_auto_is_not_called_the_default():
    from lightning_prune.selection import ratio_aware, strategies

    for module in (ratio_aware, strategies):
        assert "recommended default" not in (module.__doc__ or "")


def test_validated_candidates_pass_the_options_each_strategy_takes_and_survive_a_class_of_one():
    from lightning_prune.pipeline.validated import candidates

    rng = np.random.default_rng(0)
    labels = np.concatenate([[0], rng.integers(1, 4, 399)])
    confidence = rng.random(400)
    scores = lp.Scores(rng.random(400), "dual", labels=labels, extras={"confidence": confidence})
    with pytest.warns(UserWarning, match=r"no sample of class\(es\) \[0\]"):
        chosen = candidates(scores, 0.9, 0, {"validate": True, "ccs_bins": 2, "dual_cd": 2.0})
    assert chosen["ccs"].hparams["ccs_bins"] == 2 and chosen["dual"].hparams["dual_cd"] == 2.0
    assert chosen["easy"].hparams["within"] == "all"
    assert "class_balanced" not in chosen  # 10% of a class of one sample keeps none of it: no such candidate
    assert len(chosen["topk"]) == 40
    assert confidence[chosen["easy"].indices].min() >= np.sort(confidence)[-40]
    with pytest.raises(ValueError, match=r"select_args key 'ccs_beta'.*'auto' chooses its CCS cut-off"):
        candidates(scores, 0.5, 0, {"validate": True, "ccs_beta": 0.2})


def test_collected_scores_carry_the_declared_meaning_through_a_fit_and_a_file(tmp_path):
    collectors = {
        "moderate": lp.Moderate(),
        "easy_prototypes": lp.Prototypicality(metric="euclidean", keep="easy"),
        "el2n": lp.EL2N(epochs=2),
    }
    fit(list(collectors.values()))
    meanings = {name: collector.scores.meaning for name, collector in collectors.items()}
    assert meanings == {"moderate": PREFERENCE, "easy_prototypes": EASINESS, "el2n": DIFFICULTY}
    moderate = collectors["moderate"].scores
    assert lp.Scores.load(moderate.save(tmp_path / "moderate")).meaning == PREFERENCE
    kept = lp.select(moderate, 0.8, strategy="auto").indices
    assert moderate.values[kept].mean() > np.median(moderate.values)  # the most moderate, not the least


def test_a_strategy_cannot_shadow_what_select_records():
    with pytest.raises(ValueError, match=r"options \['seed'\] are select\(\)'s own arguments"):
        Strategy(run=lambda scores, num_keep, seed, plan: np.arange(num_keep), options=(Option("seed", 0),))

    def sneaky(scores, prune_ratio, num_keep, seed, options):
        return {"prune_ratio": 0.1}

    entry = Strategy(run=lambda scores, num_keep, seed, plan: np.arange(num_keep), plan=sneaky)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(STRATEGIES, "sneaky", entry)
        with pytest.raises(ValueError, match=r"plan may not set \['prune_ratio'\]"):
            lp.select(lp.Scores(np.arange(10.0), "mine"), 0.5, strategy="sneaky")
