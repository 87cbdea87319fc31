"""Progress of a workflow step: a tqdm bar with ETA, plain lines, or nothing.

    progress = Progress()                                  # "auto": a bar in a terminal or Jupyter, else lines
    trainer_callback = progress.training("classifier")     # for Classifier.train / Trainer(progress=...)
    with progress.counter("generating", total=40, unit="review") as count:
        count(5)                                           # 5 more done

The training callback takes its total from the core's first step event
(``total_steps``), so nobody computes it by hand; a resumed run starts the bar
where the checkpoint left off. Plain lines (a log file, a pipe, CI) come at most
every tenth of the way or every 30 seconds, each with the elapsed time and ETA.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

__all__ = ["Progress", "MODES", "format_seconds"]

MODES = ("auto", "bar", "lines", "quiet")
_LINE_EVERY_S = 30.0


def format_seconds(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return bool(get_ipython and get_ipython() is not None and "IPKernelApp" in getattr(get_ipython(), "config", {}))


class _Lines:
    """A counter printed as occasional plain lines."""

    def __init__(self, name: str, total: int, unit: str, log: Callable[[str], None], initial: int = 0):
        self.name, self.total, self.unit, self.log = name, max(int(total), 0), unit, log
        self.n = self.start_n = int(initial)
        self.started = self.last_time = time.monotonic()
        self.last_tenth = self._tenth()
        self.postfix = ""

    def _tenth(self) -> int:
        return 10 * self.n // self.total if self.total else 0

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.monotonic()
        if self._tenth() > self.last_tenth or now - self.last_time >= _LINE_EVERY_S or self.n >= self.total:
            self.last_tenth, self.last_time = self._tenth(), now
            self.log(self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.started
        done = self.n - self.start_n
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        eta = ""
        if self.total and done > 0 and self.n < self.total:
            eta = f", ETA {format_seconds(elapsed / done * (self.total - self.n))}"
        extra = f"  {self.postfix}" if self.postfix else ""
        return f"{self.name}: {self.n}/{self.total} {self.unit}s{share}, {format_seconds(elapsed)} elapsed{eta}{extra}"

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def write(self, text: str) -> None:
        self.log(text)

    def close(self) -> None:
        pass


class _Quiet:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += int(n)

    def set_postfix_str(self, text: str) -> None:
        pass

    def write(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Counter:
    """``count(n)`` adds n; a context manager that closes the display."""

    def __init__(self, display):
        self.display = display

    @property
    def n(self) -> int:
        return self.display.n

    def __call__(self, n: int = 1, postfix: Optional[str] = None) -> None:
        if postfix is not None:
            self.display.set_postfix_str(postfix)
        self.display.update(n)

    def __enter__(self) -> "_Counter":
        return self

    def __exit__(self, *exc) -> None:
        self.display.close()


class Progress:
    """How a step shows its progress. mode: "auto" (a tqdm bar when stderr is a
    terminal or in Jupyter, plain lines otherwise), "bar", "lines" or "quiet"."""

    def __init__(self, mode: str = "auto", log: Callable[[str], None] = print, stream=None):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            interactive = getattr(self.stream, "isatty", lambda: False)() or _in_jupyter()
            mode = "bar" if interactive else "lines"
        self.mode = mode
        self.log = log

    def _display(self, name: str, total: int, unit: str, initial: int = 0):
        if self.mode == "quiet":
            return _Quiet()
        if self.mode == "lines":
            return _Lines(name, total, unit, self.log, initial)
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=name, unit=unit, file=self.stream, dynamic_ncols=True)

    def counter(self, name: str, total: int, unit: str = "item") -> _Counter:
        return _Counter(self._display(name, total, unit))

    def training(self, name: str) -> Callable[[dict], None]:
        """A Trainer progress callback: one bar over the run's optimizer updates."""
        state: dict = {"display": None}

        def on_event(event: dict) -> None:
            kind = event.get("event")
            display = state["display"]
            if kind == "step":
                if display is None:
                    first = int(event["step"])
                    display = state["display"] = self._display(f"{name} training", int(event["total_steps"]),
                                                               "step", initial=max(first - 1, 0))
                display.set_postfix_str(f"epoch {event['epoch']} loss {event['loss']:.4f} lr {event['lr']:.2e}")
                display.update(int(event["step"]) - display.n)  # step events may come every k-th update
                if int(event["step"]) >= int(event["total_steps"]):
                    display.close()
            elif kind == "eval" and self.mode != "quiet":
                shown = ", ".join(f"{k} {v:.4f}" for k, v in event.items()
                                  if k.startswith("eval_") and isinstance(v, float))
                text = f"{name} epoch {event['epoch']}: {shown}"
                (display.write(text) if display is not None and self.mode == "bar" else self.log(text))

        return on_event
