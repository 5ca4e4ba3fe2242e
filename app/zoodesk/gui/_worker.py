"""The one way the GUI runs long work: a task in a thread pool, reporting through signals.

A task is a plain callable from the core that takes a cancel check and returns
either a value or a generator of events (batch runs, downloads, previews...).  It
runs in a :class:`QThreadPool` thread; each yielded event, the result and any error
are emitted as signals, which Qt delivers on the GUI thread (the signal object
lives there), so widgets only ever change on the GUI thread.  Cancelling sets a
flag that the task checks between steps: nothing is killed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)

CancelCheck = Callable[[], bool]
Task = Callable[[CancelCheck], Any]


class WorkerSignals(QObject):
    """Signals of one task; created on the GUI thread so that slots run there."""

    #: Every event a generator task yields, in order.
    yielded = Signal(object)
    #: The task's return value (a generator's ``return`` value), after the last event.
    returned = Signal(object)
    #: The exception that ended the task.
    errored = Signal(object)
    #: Always emitted last, whatever happened.
    finished = Signal()


class Worker(QRunnable):
    """A task run on a pool thread; see the module docstring.

    Parameters
    ----------
    task
        Called on the pool thread with the cancel check.
    name
        Shown in logs and messages.
    """

    def __init__(self, task: Task, name: str) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.name = name
        self.signals = WorkerSignals()
        self._task = task
        self._cancel = threading.Event()
        self._done = threading.Event()

    def cancel(self) -> None:
        """Ask the task to stop at its next check."""
        self._cancel.set()

    def is_cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        """True once the task has ended."""
        return self._done.is_set()

    def run(self) -> None:
        try:
            result = self._task(self.is_cancelled)
            if isinstance(result, Generator | Iterator):
                result = self._drain(result)
            self.signals.returned.emit(result)
        except BaseException as exc:
            log.debug("task %s ended with an error", self.name, exc_info=True)
            self.signals.errored.emit(exc)
        finally:
            self._done.set()
            self.signals.finished.emit()

    def _drain(self, events: Iterator[Any]) -> Any:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            self.signals.yielded.emit(event)


class TaskRunner(QObject):
    """Starts workers, keeps them alive while they run, and cancels them all on exit.

    Parameters
    ----------
    max_threads
        Tasks that may run at the same time.
    """

    #: Emitted with the number of running tasks whenever it changes.
    busy_changed = Signal(int)

    def __init__(self, parent: QObject | None = None, max_threads: int = 4) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._active: list[Worker] = []

    @property
    def active(self) -> list[Worker]:
        """The tasks that have not finished yet."""
        return list(self._active)

    def start(
        self,
        task: Task,
        name: str,
        *,
        on_event: Callable[[Any], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> Worker:
        """Run ``task`` on a pool thread; the callbacks are called on the GUI thread.

        Pass bound methods of widgets (``self._on_...``) as callbacks: Qt then
        delivers the signals through the GUI thread's event loop.
        """
        worker = Worker(task, name)
        signals = worker.signals
        if on_event is not None:
            signals.yielded.connect(on_event)
        if on_result is not None:
            signals.returned.connect(on_result)
        if on_error is not None:
            signals.errored.connect(on_error)
        if on_finished is not None:
            signals.finished.connect(on_finished)
        signals.finished.connect(self._on_worker_finished)
        self._active.append(worker)
        self.busy_changed.emit(len(self._active))
        self._pool.start(worker)
        return worker

    def _on_worker_finished(self) -> None:
        self._active = [w for w in self._active if not w.done]
        self.busy_changed.emit(len(self._active))

    def cancel_all(self) -> None:
        """Ask every running task to stop."""
        for worker in self._active:
            worker.cancel()

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until every task has ended (used on exit only); True if they all did.

        Sleeps in Python rather than in ``QThreadPool.waitForDone``, which keeps the
        interpreter lock: a task needing it to finish would wait for the timeout.
        """
        deadline = time.monotonic() + timeout_ms / 1000
        while self._pool.activeThreadCount() > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
