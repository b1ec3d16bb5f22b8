"""What Lightning prints while musicssl trains (``musicssl train``, ``train-beats``).

Standard output carries a command's results (the model's path), so
Lightning's progress bar goes to standard error, and Lightning's tips that
advertise services ("install litlogger ...") are dropped.

``trainer_callbacks(progress)`` -> the callbacks a ``Trainer`` needs for that;
pass ``enable_progress_bar=progress`` beside them. ``final_checkpoint(path)``:
the ``last.ckpt`` writer both trainers use.
"""

from __future__ import annotations

import logging
import sys

#: Lightning log messages containing one of these are not shown.
_DROPPED = ("litlogger", "💡 Tip")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _DROPPED)


_FILTER = _DropTips()


def quiet_lightning_tips() -> None:
    """Drop Lightning's advertising tips from its log (idempotent)."""
    for name in ("lightning.fabric.utilities.rank_zero", "lightning_utilities.core.rank_zero",
                 "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def stderr_progress_bar():
    """Lightning's TQDM progress bar, drawn on standard error."""
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

    class StderrProgressBar(TQDMProgressBar):
        def _bar(self, desc: str, position: int, leave: bool, smoothing: float = 0.3) -> Tqdm:
            return Tqdm(desc=desc, position=position, disable=self.is_disabled, leave=leave,
                        dynamic_ncols=True, file=sys.stderr, smoothing=smoothing,
                        bar_format=self.BAR_FORMAT)

        def init_sanity_tqdm(self) -> Tqdm:
            return self._bar(self.sanity_check_description, 2 * self.process_position, False)

        def init_train_tqdm(self) -> Tqdm:
            return self._bar(self.train_description, 2 * self.process_position, True, smoothing=0)

        def init_predict_tqdm(self) -> Tqdm:
            return self._bar(self.predict_description, 2 * self.process_position, True, smoothing=0)

        def init_validation_tqdm(self) -> Tqdm:
            has_main_bar = self.trainer.state.fn != "validate"
            return self._bar(self.validation_description, 2 * self.process_position + has_main_bar,
                             not has_main_bar)

        def init_test_tqdm(self) -> Tqdm:
            return self._bar("Testing", 2 * self.process_position, True)

    return StderrProgressBar()


def final_checkpoint(path):
    """A callback that writes the full training state to ``path`` when training ends
    (also after a time budget or early stopping), so ``--resume last`` continues there."""
    import lightning.pytorch as pl

    class FinalCheckpoint(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            trainer.save_checkpoint(path, weights_only=False)

    return FinalCheckpoint()


def trainer_callbacks(progress: bool) -> list:
    """Callbacks for a musicssl ``Trainer``: the stderr progress bar when ``progress``.
    Also drops Lightning's tips (:func:`quiet_lightning_tips`)."""
    quiet_lightning_tips()
    return [stderr_progress_bar()] if progress else []
