"""Packed trials: k trials trained as one batched model record what k unpacked trials record."""

import dataclasses
import math

import pytest

from telescope.errors import ConfigError
from telescope.runs.executor import make_executor
from telescope.spec import ModelShape, Status, StepMetrics, TrainSettings, TrialResult, TrialSpec
from telescope.training.train import pack_key, run_trial, run_trials
from telescope.trials import ExecutorSettings, Packing
from telescope.trials.packs import plan_packs

SHAPE = ModelShape(depth=2, head_dim=16, seq_len=32)


def spec(lr=0.03, weight_decay=0.1, seed=0, steps=12, width=32, **fields):
    train = TrainSettings(steps=steps, batch_size=4, warmup_steps=2, eval_batches=2, device="cpu")
    return TrialSpec(
        width=width,
        base_width=16,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        model=fields.pop("model", SHAPE),
        train=train,
        **fields,
    )


def recorded(specs, packed: bool):
    """(result, metrics) per spec, trained as one pack or one at a time by the reference path
    (the unbatched model with torch's AdamW)."""
    metrics = [[] for _ in specs]
    if packed:
        results = run_trials(specs, [m.append for m in metrics])
    else:
        results = [run_trials([s], [m.append], reference=True)[0] for s, m in zip(specs, metrics)]
    return list(zip(results, metrics))


def assert_same_trial(packed, alone, rel=2e-3):
    (result, metrics), (ref, ref_metrics) = packed, alone
    assert result.status is ref.status and result.steps == ref.steps
    assert [m.step for m in metrics] == [m.step for m in ref_metrics]
    for m, r in zip(metrics, ref_metrics):
        assert m.tokens == r.tokens and m.lr == pytest.approx(r.lr, rel=1e-12)
        if math.isfinite(r.train_loss):
            assert m.train_loss == pytest.approx(r.train_loss, rel=rel)
            assert m.grad_norm == pytest.approx(r.grad_norm, rel=20 * rel)
    if ref.val_loss is not None:
        assert result.val_loss == pytest.approx(ref.val_loss, rel=rel)
    assert (result.tokens, result.flops, result.fingerprint) == (ref.tokens, ref.flops, ref.fingerprint)


@pytest.mark.parametrize("seeds", [(0, 0, 0), (0, 1, 2)], ids=["one-seed", "own-seeds"])
def test_a_pack_records_what_each_trial_records_alone(seeds):
    """Each trial of a pack keeps its own LR, weight decay, Muon ratio, seed (init and data
    order): every step's loss, grad norm and LR, and the validation loss, match the trial
    run unpacked."""
    specs = [spec(0.02, 0.1, seeds[0]), spec(0.06, 0.4, seeds[1]), spec(0.01, 0.0, seeds[2], muon_lr_ratio=2.0)]
    alone, packed = recorded(specs, packed=False), recorded(specs, packed=True)
    for trial, ref in zip(packed, alone):
        assert_same_trial(trial, ref)
    assert len({round(r.val_loss, 4) for r, _ in alone}) == 3  # three different trials
    assert [r.device for r, _ in packed] == ["cpu, pack of 3"] * 3 and alone[0][0].device == "cpu"


@pytest.mark.parametrize("seeds", [(0, 0, 0, 0), (0, 1, 2, 0)], ids=["one-seed", "own-seeds"])
def test_a_trials_numbers_do_not_depend_on_its_pack(seeds):
    """Bitwise: a trial alone, in a pack of 2, 3 or 4, in any position, records the same
    losses, so a resumed trial that reruns alone matches its first, packed run."""
    specs = [
        spec(0.02, 0.1, seeds[0]),
        spec(0.06, 0.4, seeds[1]),
        spec(0.01, 0.0, seeds[2], muon_lr_ratio=2.0),
        spec(0.03, 0.2, seeds[3]),
    ]

    def losses(pack):
        metrics = [[] for _ in pack]
        results = run_trials(pack, [m.append for m in metrics])
        return [(r.val_loss, r.train_loss, [m.train_loss for m in ms]) for r, ms in zip(results, metrics)]

    alone = [losses([s])[0] for s in specs]
    assert losses(specs) == alone
    assert losses(specs[1:3]) == alone[1:3]
    assert losses([specs[2], specs[0], specs[1]]) == [alone[2], alone[0], alone[1]]
    assert run_trial(specs[1]).val_loss == alone[1][0]


def test_tied_embeddings_and_grouped_kv_heads_pack_too():
    shape = dataclasses.replace(SHAPE, tied_embeddings=True, kv_ratio=2)
    specs = [spec(0.02, model=shape, width=64), spec(0.05, 0.3, seed=4, model=shape, width=64)]
    for packed, ref in zip(recorded(specs, packed=True), recorded(specs, packed=False)):
        assert_same_trial(packed, ref)


def test_a_diverging_trial_stops_recording_and_the_others_train_on():
    specs = [spec(0.03, steps=30), spec(1e3, steps=30), spec(0.01, 0.2, seed=3, steps=30)]
    packed, alone = recorded(specs, packed=True), recorded(specs, packed=False)
    diverged, ref = packed[1], alone[1]
    assert diverged[0].status is Status.DIVERGED and diverged[0].val_loss is None
    assert diverged[0].steps == ref[0].steps == len(diverged[1]) < 30
    for i in (0, 2):
        assert packed[i][0].status is Status.COMPLETED
        assert_same_trial(packed[i], alone[i])


def test_trials_that_differ_in_more_than_swept_values_and_seed_are_not_packed():
    with pytest.raises(ValueError, match="differ only in"):
        run_trials([spec(width=32), spec(width=64)])
    with pytest.raises(ValueError, match="differ only in"):
        run_trials([spec(), dataclasses.replace(spec(), train=dataclasses.replace(spec().train, steps=3))])
    user = spec(model_factory="tests.foreign_models:decoder_lm")
    assert pack_key(user) is None
    with pytest.raises(ValueError, match="differ only in"):
        run_trials([user, user])


def test_packs_are_balanced_over_the_slots_and_never_mix_shapes():
    a, b = spec(width=32), spec(width=64)
    keys = [pack_key(s) for s in [a] * 9 + [b] * 3 + [spec(model_factory="m:f")]]
    packs = plan_packs(keys, pack_size=8, slots=2)
    assert sorted(i for p in packs for i in p) == list(range(13))
    assert sorted(len(p) for p in packs if p[0] < 9) == [4, 5]  # 9 trials over 2 slots
    assert sorted(len(p) for p in packs if 9 <= p[0] < 12) == [1, 2]
    assert [12] in packs  # a user's model runs alone
    assert all(len({keys[i] for i in p}) == 1 for p in packs)
    assert sorted(len(p) for p in plan_packs(keys[:9], pack_size=2, slots=2)) == [1, 2, 2, 2, 2]
    assert plan_packs(keys[:9], pack_size=1, slots=2) == [[i] for i in range(9)]
    assert [len(p) for p in plan_packs(keys[:9], pack_size=8, slots=1)] == [5, 4]


@pytest.mark.parametrize("pack", [0, -1, 1025])
def test_pack_size_out_of_range_is_a_config_error(pack):
    with pytest.raises(ConfigError, match="pack"):
        ExecutorSettings(pack=pack)


def test_a_pack_that_raises_runs_its_trials_one_by_one_through_the_executor():
    """Out of memory as a pack, say: each trial then runs alone, its abandoned rows dropped."""

    def trial_fn(s, on_metrics):
        on_metrics(StepMetrics(step=1, tokens=1, train_loss=1.0, lr=s.lr, grad_norm=1.0, elapsed=0.0))
        return TrialResult(status=Status.COMPLETED, val_loss=s.lr)

    def pack_fn(specs, callbacks):
        for s, callback in zip(specs, callbacks):
            callback(StepMetrics(step=1, tokens=1, train_loss=9.0, lr=s.lr, grad_norm=1.0, elapsed=0.0))
        raise RuntimeError("out of memory")

    calls = []

    class Events:
        def started(self, key):
            calls.append(("started", key))

        def metrics(self, key, rows):
            calls.append(("metrics", key, rows[0].train_loss))

        def finished(self, key, result):
            calls.append(("finished", key, result.val_loss))

    executor = make_executor(ExecutorSettings(kind="local", pack=4), trial_fn, Packing(pack_key, pack_fn))
    executor.run([(f"t{i}", spec(lr=0.01 * (i + 1))) for i in range(3)], Events())
    for i in range(3):
        mine = [c[0] if c[0] == "started" else c for c in calls if c[1] == f"t{i}"]
        # started (pack), the pack's row, started again (alone), its own row, its own result
        assert mine == [
            "started",
            ("metrics", f"t{i}", 9.0),
            "started",
            ("metrics", f"t{i}", 1.0),
            ("finished", f"t{i}", pytest.approx(0.01 * (i + 1))),
        ]
