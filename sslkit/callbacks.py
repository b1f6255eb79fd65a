"""Per-step work besides the step itself: ``train(method, data, cfg, callbacks=[...])``.

A callback is any function ``f(history)``: ``train`` calls it after every optimizer step with the
run's ``History`` (``history.steps`` of ``history.total_steps`` taken, ``history.losses[-1]`` the last
loss, ``history.epochs`` the passes over the data so far). Raising ``KeyboardInterrupt`` in one
stops the run as the stop button does (saved first, with a ``run_dir``). An object may also have
``on_train_start(history)`` and ``on_train_end(history)``, called before the first step and after
the last, and ``timed = False`` when its time should not count against a time budget.

The kit's own are callbacks too: ``ProgressBar`` (``train``'s ``progress=True``), ``LivePlot``
(``live_plot=True``) and ``KnnMonitor`` (``monitor=(bank, test)``). A method's own update after a
step (a momentum encoder's teacher) is its ``on_step_end(step, total_steps)`` method instead.

>>> import sslkit
>>> from sslkit.supervised import Supervised
>>> from sslkit.train import train
>>> backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
>>> data = sslkit.load_dataset("shapes", "train", n=64, seed=0)
>>> cfg = sslkit.make_config("smoke", num_epochs=1, batch_size=32, time_budget_s=None)
>>> seen = []
>>> history = train(Supervised(backbone, 10, dim), data, cfg, progress=False,
...                 callbacks=[lambda h: seen.append((h.steps, h.total_steps))])
>>> seen
[(1, 2), (2, 2)]
"""

from __future__ import annotations

from torch import nn


def call_all(callbacks, hook: str, history) -> None:
    """Run ``hook`` ("on_train_start", "on_train_end") of every callback that has it."""
    for callback in callbacks:
        if hasattr(callback, hook):
            getattr(callback, hook)(history)


class ProgressBar:
    """A tqdm progress bar with the live loss (and the kNN accuracy of a ``KnnMonitor`` listed before it)."""

    def __init__(self, desc: str, every: int = 5):
        self.desc, self.every, self.bar, self.knn_seen = desc, every, None, 0

    def on_train_start(self, history) -> None:
        from tqdm.auto import tqdm
        self.bar = tqdm(total=history.total_steps, initial=history.steps, desc=self.desc, leave=True)
        self.knn_seen = len(history.knn)

    def __call__(self, history) -> None:
        self.bar.update(1)
        if len(history.knn) > self.knn_seen:  # the monitor measured at the end of this epoch
            self.knn_seen = len(history.knn)
            self.bar.set_postfix(loss=f"{history.losses[-1]:.3f}", knn=f"{history.knn[-1]:.3f}")
        elif history.steps % self.every == 0 or history.steps == 1:
            self.bar.set_postfix(loss=f"{history.losses[-1]:.3f}", refresh=False)

    def on_train_end(self, history) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LivePlot:
    """A loss curve that redraws in place in a notebook every ``every`` steps; does nothing outside one."""

    def __init__(self, every: int = 20):
        self.every, self.handle, self.fig = every, None, None
        try:
            from IPython import get_ipython
            from IPython.display import display
            if get_ipython() is None or not hasattr(get_ipython(), "kernel"):
                return  # headless: no plot
            from matplotlib.figure import Figure
        except ImportError:
            return
        self.fig = Figure(figsize=(6, 2.5))
        self.ax = self.fig.add_subplot()
        self.handle = display(self.fig, display_id=True)

    def __call__(self, history, force: bool = False) -> None:
        if self.handle is None or (not force and history.steps % self.every):
            return
        self.ax.clear()
        self.ax.plot(history.losses, lw=0.8)
        self.ax.set(xlabel="step", ylabel="loss", title=f"step {history.steps}, loss {history.losses[-1]:.3f}")
        self.fig.tight_layout()
        self.handle.update(self.fig)

    def on_train_end(self, history) -> None:
        if history.losses:
            self(history, force=True)


class KnnMonitor:
    """kNN accuracy of ``backbone`` on ``test`` with ``bank`` as the labeled memory (``sslkit.evaluate``):
    before training, at the end of every epoch and at the end of the run, in ``history.knn`` (at
    ``history.knn_epochs``). Its time does not count against the time budget (``timed = False``).
    A run stopped by Ctrl-C, SIGTERM or ``max_steps`` is not measured at its end: it will resume."""

    timed = False

    def __init__(self, backbone: nn.Module, bank, test):
        self.backbone, self.bank, self.test = backbone, bank, test

    def measure(self, history) -> float:
        from .evaluate import extract_features, knn_accuracy
        acc = knn_accuracy(extract_features(self.backbone, self.bank), self.bank.labels,
                           extract_features(self.backbone, self.test), self.test.labels)
        history.knn_epochs.append(round(history.epochs, 3))
        history.knn.append(acc)
        return acc

    def on_train_start(self, history) -> None:
        if history.steps == 0:  # a resumed run has its earlier measurements
            self.measure(history)

    def __call__(self, history) -> None:
        if history.epochs == int(history.epochs) and history.steps < history.total_steps:  # an epoch ended
            self.measure(history)

    def on_train_end(self, history) -> None:
        if history.losses and history.stop_reason not in ("interrupted", "SIGTERM", "max steps", "error"):
            self.measure(history)
