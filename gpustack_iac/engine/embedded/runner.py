"""Run a Pulumi program in this process under the real SDK, against our monitor."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import run_in_stack

from gpustack_iac.contract import cancel

from gpustack_iac.engine.base import Program
from gpustack_iac.engine.embedded import sdk_hooks
from gpustack_iac.engine.embedded.monitor import EmbeddedMonitor, LogEngine
from gpustack_iac.engine.embedded.monitor import log as monitor_log

# The SDK sends each registration from an executor thread; this bounds provider calls in flight.
DEFAULT_PARALLEL = 8

T = TypeVar("T")


class InlineExecutor(ThreadPoolExecutor):
    """Runs each submitted call at once, in the caller's thread.

    In a preview our monitor answers from memory (plus the providers' local check and diff), so
    handing every registration to a thread and back only costs GIL hand-offs. (A ThreadPoolExecutor
    only because asyncio accepts no other default executor; it never starts a thread.)
    """

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine, as a thread would
            future.set_exception(exc)
        return future


def run_program(
    program: Program,
    monitor: EmbeddedMonitor,
    log_engine: LogEngine,
    *,
    project: str,
    stack: str,
    dry_run: bool,
    parallel: int = DEFAULT_PARALLEL,
) -> None:
    """Runs `program` inside a fresh root Stack; raises whatever the program (or a step) raised."""

    def run() -> None:
        # A copied context keeps the SDK's context-variable settings of one run away from the next.
        pulumi_settings.ROOT.set(None)
        pulumi_settings.configure(
            pulumi_settings.Settings(
                project=project,
                stack=stack,
                monitor=monitor,
                engine=log_engine,
                dry_run=dry_run,
                organization="organization",
                parallel=parallel,
            )
        )
        loop = _new_loop()
        executor: Executor = (
            InlineExecutor() if dry_run else ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="gpustack-step")
        )
        loop.set_default_executor(executor)
        asyncio.set_event_loop(loop)
        cancel.reset()
        interrupted = False
        try:
            with sdk_hooks.active(monitor_log):
                loop.run_until_complete(run_in_stack(_settled(program)))
        except KeyboardInterrupt:
            # Steps still running are in executor threads: end their waits now, not after minutes,
            # and do not wait here for the SDK's tasks, which wait on those steps.
            cancel.request_stop()
            interrupted = True
            raise
        finally:
            if not interrupted:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        loop.run_until_complete(task)
                loop.close()
            # Steps in flight finish (their waits end at once) before the lock is released; queued ones never start.
            executor.shutdown(wait=True, cancel_futures=interrupted)
            asyncio.set_event_loop(None)

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    with _collector_paused():
        contextvars.copy_context().run(run)


def _settled(program: Program) -> Callable[[], Awaitable[None]]:
    """`program`, then a wait until the registrations it started have all returned (or one failed).

    After the program the SDK waits for every output of every resource with `asyncio.wait(...,
    FIRST_COMPLETED)` over all of them, again and again: while steps are still being applied (each
    takes milliseconds in a thread), that is one pass over thousands of pending outputs per finished
    step, and it made `up` quadratic in the number of resources. Waiting here for the registrations
    themselves, all at once, leaves the SDK's loop only outputs that are already resolved. A failure
    ends the wait early: the SDK's own wait then reports it and stops, as before.
    """

    async def run() -> None:
        result = program()
        if inspect.isawaitable(result):
            await result
        # The SDK's own list of registrations in flight (private: None off the verified range,
        # and then the SDK's own wait does the job, slower).
        rpcs = sdk_hooks.registrations_in_flight()
        while rpcs is not None:
            # One turn of the loop lets every registration scheduled so far start and join `rpcs`.
            await asyncio.sleep(0)
            pending = [rpc for rpc in rpcs if not rpc.done()]
            if not pending:
                return
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            if any(not rpc.cancelled() and rpc.exception() is not None for rpc in done):
                return

    return run


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when available: the SDK schedules several tasks and callbacks per resource."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the program runs.

    The SDK allocates futures, tasks and closures per resource; with thousands of resources the
    collector re-scans them over and over and more than doubles a preview's time. A run is bounded,
    so the cycles it leaves wait for the first automatic collection after it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
