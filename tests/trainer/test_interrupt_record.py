"""A SIGTERM that lands between a training step's end and its log entry waits for the entry, so
`train_summary.json` never counts a step whose numbers it lacks (CI once saw 2 steps with 1 logged)."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from trainer.telemetry import Telemetry, TelemetryCallback
from trainer.train import interrupted_by_sigterm


@pytest.fixture(autouse=True)
def _sigterm_handler_restored():
    previous = signal.getsignal(signal.SIGTERM)  # a fired handler leaves SIGTERM ignored, by design
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def record(tmp_path):
    callback = TelemetryCallback(Telemetry(), str(tmp_path), [])
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state = TrainerState()
    callback.on_train_begin(args, state, TrainerControl())
    return callback, args, state


def end_step(callback, args, state, logged: bool) -> None:
    callback.on_step_begin(args, state, TrainerControl())
    state.global_step += 1
    callback.on_step_end(args, state, TrainerControl(should_log=logged))


def test_an_interrupt_between_a_step_and_its_log_entry_waits_for_the_entry(record):
    callback, args, state = record
    end_step(callback, args, state, logged=True)
    with interrupted_by_sigterm(callback.interrupt_after_log):
        os.kill(os.getpid(), signal.SIGTERM)  # held: the step's log entry is on its way
        with pytest.raises(KeyboardInterrupt, match="stopped by signal SIGTERM"):
            callback.on_log(args, state, TrainerControl(), logs={"loss": 0.5, "grad_norm": 1.0})
    summary = callback.summary()
    assert summary["steps"] == 1 and summary["log_history"] == [{"step": 1, "loss": 0.5, "grad_norm": 1.0}]


def test_an_interrupt_elsewhere_is_raised_at_once(record):
    callback, args, state = record
    end_step(callback, args, state, logged=True)
    callback.on_log(args, state, TrainerControl(), logs={"loss": 0.5})
    with (
        pytest.raises(KeyboardInterrupt, match="stopped by signal SIGTERM"),
        interrupted_by_sigterm(callback.interrupt_after_log),
    ):
        os.kill(os.getpid(), signal.SIGTERM)  # no log entry due: raised in the handler
        signal.pause()  # not reached


def test_a_step_that_logs_nothing_holds_no_interrupt(record):
    callback, args, state = record
    end_step(callback, args, state, logged=False)  # logging_steps > 1: no entry is coming
    assert callback.interrupt_after_log("stopped by signal SIGTERM") is False


def test_a_held_interrupt_is_raised_by_the_next_step_at_the_latest(record):
    callback, args, state = record
    end_step(callback, args, state, logged=True)
    assert callback.interrupt_after_log("stopped by signal SIGTERM") is True
    callback.on_log(args, state, TrainerControl(), logs={"train_runtime": 3.0})  # not a step's entry
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        callback.on_step_begin(args, state, TrainerControl())


def test_a_held_out_round_logged_inside_the_step_log_does_not_release_the_interrupt(record):
    # HeldOutEvaluation logs its metrics from inside the step's own log call: they reach this
    # callback first, and the interrupt must still wait for the step's entry.
    callback, args, state = record
    end_step(callback, args, state, logged=True)
    assert callback.interrupt_after_log("stopped by signal SIGTERM") is True
    callback.on_log(args, state, TrainerControl(), logs={"heldout/map": 0.25})
    with pytest.raises(KeyboardInterrupt):
        callback.on_log(args, state, TrainerControl(), logs={"loss": 0.5})
    assert [sorted(entry) for entry in callback.summary()["log_history"]] == [["heldout/map", "step"], ["loss", "step"]]


def test_several_processes_hold_nothing(record):
    # A rank that held would wait in the log's gather for ranks already interrupted.
    callback, _, state = record
    several = SimpleNamespace(world_size=2)
    callback.on_step_begin(several, state, TrainerControl())
    callback.on_step_end(several, state, TrainerControl(should_log=True))
    assert callback.interrupt_after_log("stopped by signal SIGTERM") is False


def test_in_a_real_trainer_every_logged_step_holds_an_interrupt_until_its_entry(tmp_path):
    # The hold relies on Trainer's flow callback setting should_log before this callback's
    # on_step_end runs (callbacks given to Trainer come after its own): checked on a real Trainer.
    import torch
    from transformers import Trainer, TrainerCallback

    class Line(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, labels):
            return {"loss": ((self.weight * x - labels) ** 2).mean()}

    callback = TelemetryCallback(Telemetry(), str(tmp_path), [])
    seen = []

    class Probe(TrainerCallback):  # runs right after the telemetry callback
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(callback.interrupt_after_log("probe"))
            callback._held_interrupt = None  # only probing: nothing to raise

    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        max_steps=4,
        logging_steps=2,
        per_device_train_batch_size=2,
        save_strategy="no",
    )
    data = [{"x": torch.tensor([1.0]), "labels": torch.tensor([2.0])}] * 8
    Trainer(model=Line(), args=args, train_dataset=data, callbacks=[callback, Probe()]).train()
    assert seen == [False, True, False, True]  # logging_steps 2: steps 2 and 4 are logged
    assert [entry["step"] for entry in callback.summary()["log_history"]] == [2, 4]
