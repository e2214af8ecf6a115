"""What every trial needs, checked once per command before anything is written."""

from __future__ import annotations

import functools

from telescope.spec import ModelShape, TrainSettings
from telescope.trials.base import ExecutorSettings


@functools.cache  # once per process: a command checks early, its run finds it done
def check_inputs(model: ModelShape, train: TrainSettings, executor: ExecutorSettings) -> None:
    """Check the device and the data (it loads, holds a sequence in both splits, and its
    tokens fit the model's vocabulary), so that bad input is one line instead of a level of
    failed trials. A check that passed is not repeated in this process.

    On a cluster (`ray_address`) the workers may have the GPUs and the data path the driver
    lacks: there only the device's name is checked, and the data only if the path is here."""
    from telescope.data import load_train_data, source_path
    from telescope.training.train import check_device_name, resolve_device

    if executor.ray_address is not None:
        check_device_name(train.device, where="train.device")
        if not source_path(train.data).exists():
            return
    else:
        resolve_device(train.device, where="train.device")
    data = load_train_data(train)
    data.check_seq_len(model.seq_len)
    data.check_vocab(model.vocab_size)
