"""The ``ecseq`` command's settings: one object per invocation, holding every part a subcommand may need."""

from __future__ import annotations

from dataclasses import dataclass

from compression_builder.settings import BuilderSettings
from worker.settings import WorkerSettings


@dataclass(frozen=True)
class Settings(WorkerSettings, BuilderSettings):
    """Each subcommand reads its part (the worker its WorkerSettings fields, the builder its BuilderSettings)."""
