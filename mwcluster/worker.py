"""Task handlers: the Python API a worker runs.

A handler is a plain function registered under a name; jobs name the handler their tasks run:

    from mwcluster.worker import handler

    @handler("wordcount.count")
    def count(task, report):
        words = 0
        for n, line in enumerate(read_lines(task.input["path"])):
            words += len(line.split())
            if n % 1000 == 0:
                report(n / task.input["lines"], lines=n, words=words)
        return {"words": words}          # the task's result (anything msgpack carries)

It is called with the task (`input`, `params`, `job_id`, `index`, `attempt`) and a
`report(progress, **counters)` callable (progress in 0..1, counters numbers; the worker sends
at most one report per task per `progress_interval_ms`, the newest). Its return value is the
task's result; an exception fails the attempt with its message (the master retries the task
up to the job's `max_attempts`). `report()` returns False once the attempt is no longer this
worker's (the master gave it to another worker, or the job was cancelled): the handler may
stop early; whatever it reports or returns after that is ignored.

`mwcluster worker --handlers MODULE` imports MODULE, whose `@handler` decorators (or
`REGISTRY.register(name, fn)` calls) register its handlers in the default registry.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

from mwcluster.errors import ConfigError

__all__ = ["REGISTRY", "Registry", "Task", "handler", "load_handler_modules"]


class Task(NamedTuple):
    """What a handler is called with (besides `report`)."""
    input: Any
    params: dict
    job_id: str
    index: int
    attempt: int


Handler = Callable[[Task, Callable[..., bool]], Any]


class Registry:
    """Handlers by name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, fn: Handler) -> Handler:
        if not isinstance(name, str) or not name:
            raise ValueError("a handler name is a non-empty string")
        if not callable(fn):
            raise TypeError(f"handler {name!r} must be callable, not {type(fn).__name__}")
        existing = self._handlers.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"a different handler is already registered as {name!r} "
                             f"({existing.__module__}.{existing.__qualname__})")
        self._handlers[name] = fn
        return fn

    def handler(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: register the function under `name`."""
        def decorate(fn: Handler) -> Handler:
            return self.register(name, fn)
        return decorate

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: str) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


REGISTRY = Registry()


def handler(name: str, registry: Registry | None = None) -> Callable[[Handler], Handler]:
    """Decorator: register a handler under `name` in the default registry (or `registry`)."""
    return (registry or REGISTRY).handler(name)


def load_handler_modules(modules: list[str] | tuple[str, ...]) -> None:
    """Import each module (dotted name) so that its handlers register themselves."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import the handler module {module!r}: {exc} (give a "
                              "dotted module name importable from the worker's Python path, "
                              "e.g. mwcluster.demo.job or a module in the current "
                              "directory)") from None
        except Exception as exc:      # the module itself fails: a syntax error, a raise
            raise ConfigError(f"the handler module {module!r} failed while being imported: "
                              f"{type(exc).__name__}: {exc}") from exc
