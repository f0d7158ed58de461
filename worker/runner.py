"""The process around the Faust app: faust.Worker, with a bounded stop and rate-limited logs.

SIGTERM (or Ctrl-C) starts Faust's own clean stop: finish the batch in flight, commit, exit 0
(about a second). That stop waits on Kafka, so with the broker gone it could wait for ever; a
watchdog ends the process STOP_SECONDS after the signal whatever it is doing, exit status 1
(nothing it had not committed is lost: it is redelivered). Kubernetes waits 30 s before SIGKILL
by default; the compose file gives the workers as long.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import faust

from worker import internals
from worker.logs import RepeatFilter

log = logging.getLogger("ecseq.worker")

STOP_SECONDS = 25.0


class WorkerRunner(faust.Worker):
    def __init__(self, *args: object, stop_seconds: float = STOP_SECONDS, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.stop_seconds = stop_seconds
        self._watchdog: threading.Timer | None = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        for handler in logger.handlers:
            handler.addFilter(RepeatFilter())

    def install_signal_handlers(self) -> None:
        super().install_signal_handlers()
        for signum, stop in internals.stop_signal_handlers(self).items():
            self.loop.add_signal_handler(signum, self._bounded(stop))

    def _bounded(self, stop: Callable[[], None]) -> Callable[[], None]:
        def handler() -> None:
            if self._watchdog is None:
                self._watchdog = threading.Timer(self.stop_seconds, self._give_up)
                self._watchdog.daemon = True
                self._watchdog.start()
            stop()
        return handler

    def _give_up(self) -> None:
        log.error("did not stop within %gs of the signal: exiting now (what was not committed is redelivered)",
                  self.stop_seconds)
        logging.shutdown()
        os._exit(1)
