import json
import math

import pytest
from micro import TINY_TRIAL
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.spec import ModelShape, Status, TrainSettings, TrialSpec
from telescope.training.train import lr_multiplier, run_trial

SMALL = ModelShape(depth=1, head_dim=16, seq_len=32)


def small_spec(lr=0.03, steps=6, **train):
    return TrialSpec(
        width=32,
        base_width=32,
        lr=lr,
        weight_decay=0.1,
        model=SMALL,
        train=TrainSettings(steps=steps, batch_size=4, warmup_steps=2, eval_batches=2, device="cpu", **train),
    )


def test_cosine_schedule_warms_up_then_decays_to_the_final_ratio():
    t = TrainSettings(steps=100, warmup_steps=10, final_lr_ratio=0.1)
    lrs = [lr_multiplier(s, t) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_wsd_schedule_is_flat_then_decays():
    t = TrainSettings(steps=100, warmup_steps=10, schedule="wsd", final_lr_ratio=0.0)
    lrs = [lr_multiplier(s, t) for s in range(100)]
    assert lrs[10:80] == [1.0] * 70
    assert lrs[-1] == pytest.approx(0.0) and lrs[90] < 1.0


def test_trial_is_deterministic_on_cpu():
    runs = []
    for _ in range(2):
        metrics = []
        result = run_trial(small_spec(), metrics.append)
        runs.append((result.train_loss, result.val_loss, [(m.train_loss, m.grad_norm, m.lr) for m in metrics]))
    assert runs[0] == runs[1]


def test_absurd_lr_diverges_and_keeps_its_metrics():
    metrics = []
    result = run_trial(small_spec(lr=1e3, steps=30), metrics.append)
    assert result.status is Status.DIVERGED
    assert result.steps == len(metrics) < 30
    last = metrics[-1].train_loss
    assert not math.isfinite(last) or last > 2.0 * metrics[0].train_loss
    assert result.val_loss is None


def test_trial_learns_on_the_default_corpus():
    metrics = []
    spec = TrialSpec(
        width=64,
        base_width=64,
        lr=0.034,
        weight_decay=0.0,
        train=TrainSettings(steps=60, warmup_steps=10, eval_batches=4, device="cpu"),
    )
    result = run_trial(spec, metrics.append)
    assert result.status is Status.COMPLETED and result.steps == 60
    assert result.val_loss < 3.2 < math.log(256)  # uniform bytes: 5.55 nats
    assert result.tokens == 60 * 16 * 64 == metrics[-1].tokens
    assert result.flops > 0 and result.device == "cpu"
    assert result.fingerprint["table"] == "paper"
    assert [m.step for m in metrics] == list(range(1, 61))


def test_trial_cli_prints_json():
    out = CliRunner().invoke(
        app,
        [*TINY_TRIAL, "--json"],
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["result"]["status"] == "completed" and doc["result"]["steps"] == 3
    assert doc["spec"]["lr"] > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--parametrization", "nope"], "unknown parametrization"),
        (["--width", "40"], "head_dim"),
        (["--data", "/nonexistent/file.bin"], ""),
    ],
)
def test_trial_cli_rejects_bad_input_with_exit_2(args, message):
    out = CliRunner().invoke(app, ["trial", "--steps", "1", "--head-dim", "16", *args])
    assert out.exit_code == 2, out.output
    assert message in out.output


@pytest.mark.parametrize("lr, steps", [(0.03, 10), (1e3, 30)])
def test_reading_the_loss_every_few_steps_records_the_same_trial(monkeypatch, lr, steps):
    """On a GPU the host reads losses every HOST_SYNC_STEPS steps: the same metrics, the same
    result and, for a diverging trial, the same last recorded step as reading every step."""
    import telescope.training.train as train

    runs = []
    for every in (1, 4):
        monkeypatch.setattr(train, "host_sync_steps", lambda device, every=every: every)
        metrics = []
        result = run_trial(small_spec(lr=lr, steps=steps), metrics.append)
        runs.append(
            (
                result.status,
                result.steps,
                result.train_loss,
                result.val_loss,
                [(m.step, m.train_loss, m.grad_norm, m.lr) for m in metrics],
            )
        )
    assert runs[0] == runs[1]
    assert runs[0][0] is (Status.COMPLETED if lr < 1 else Status.DIVERGED)
