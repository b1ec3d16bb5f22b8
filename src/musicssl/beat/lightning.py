"""The Lightning wrapper of ZeroNS pretext training (SPEC §2.3): the synchrony loss of
both branches, the optimiser and logging. The networks are :mod:`musicssl.beat.model`."""

from __future__ import annotations

import time

import lightning as L
import torch

from musicssl.beat.config import PretrainConfig
from musicssl.beat.losses import nt_xent, random_shifts, shift_frames
from musicssl.beat.model import ZeroNS


class ZeroNSPretrainModule(L.LightningModule):
    """Sync-pred training of both ZeroNS branches."""

    def __init__(self, config_dict: dict):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = PretrainConfig.from_dict(config_dict)
        self.model = ZeroNS(width=self.cfg.width, dropout=self.cfg.dropout)
        self._t0 = None

    def pretext_loss(self, perc: torch.Tensor, rest: torch.Tensor) -> tuple[torch.Tensor, dict]:
        lp = self.model.percussive.logits(perc)
        la = self.model.non_percussive.logits(rest)
        p, a = torch.sigmoid(lp), torch.sigmoid(la)
        negatives = None
        if self.cfg.hard_negatives:
            shifts = random_shifts(p.shape[0], self.cfg.min_shift, self.cfg.max_shift)
            negatives = shift_frames(p, shifts)
        loss = nt_xent(a, p, negatives, self.cfg.temperature, center=self.cfg.center_outputs)
        if self.cfg.logit_penalty:
            loss = loss + self.cfg.logit_penalty * 0.5 * (lp.pow(2).mean() + la.pow(2).mean())
        with torch.no_grad():
            if self.cfg.center_outputs:
                a = a - a.mean(dim=1, keepdim=True)
                p = p - p.mean(dim=1, keepdim=True)
            an = torch.nn.functional.normalize(a, dim=1)
            pn = torch.nn.functional.normalize(p, dim=1)
            sim = an @ pn.T
            acc = (sim.argmax(dim=1) == torch.arange(len(sim), device=sim.device)).float().mean()
        return loss, {"sync_acc": acc, "pos_cos": sim.diag().mean()}

    def training_step(self, batch, batch_idx):
        perc, rest = batch
        loss, extra = self.pretext_loss(perc, rest)
        bs = perc.shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("sync_acc", extra["sync_acc"], prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("pos_cos", extra["pos_cos"], batch_size=bs, sync_dist=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr,
                                weight_decay=self.cfg.weight_decay)
        return opt


def make_module(config: PretrainConfig) -> "ZeroNSPretrainModule":
    """The Lightning module for ``config``."""
    return ZeroNSPretrainModule(config.to_dict())



class PrintProgress(L.Callback):
    """Prints step, loss, synchrony accuracy and seconds per step every ``every`` steps."""

    def __init__(self, every: int = 10):
        self.every = every
        self.t0 = time.monotonic()
        self.last_step = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every or step == self.last_step or trainer.global_rank != 0:
            return
        now = time.monotonic()
        rate = (now - self.t0) / max(1, step - self.last_step)
        self.t0, self.last_step = now, step
        m = trainer.callback_metrics
        print(f"step {step}: loss {float(m.get('train_loss', float('nan'))):.4f} "
              f"sync_acc {float(m.get('sync_acc', float('nan'))):.3f} ({rate:.2f} s/step)", flush=True)


def _print_callback(every: int = 10) -> "PrintProgress":
    """A callback printing step, loss, synchrony accuracy and seconds per step."""
    return PrintProgress(every)

