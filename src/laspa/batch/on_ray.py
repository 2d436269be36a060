"""Running work on Ray: one actor per worker holds one loaded Editor (the model loads once
per worker, on its GPU where the cluster has GPUs), and Ray Data feeds the actors.

:func:`map_with_editors` is the general hook: it sends text payloads through actors that
each hold an Editor and apply a handler ``handler(editor, payload) -> text``. Batch jobs
send one group per payload (:func:`run_batch`), the benchmark one case; any other
command (video) can send its own units with its own module-level handler.

Ray is an optional dependency (``pip install 'laspa[ray]'``); nothing here imports it
at module level.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import LaspaError

#: how long a --ray-address may take to accept a connection before the job is refused
#: (ray.init itself keeps retrying an address nothing answers at for about a minute)
CONNECT_TIMEOUT_S = 3.0
#: the object store of a local cluster: payloads and results are short texts
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
#: how long the workers may take to start and load their models
ACTOR_START_TIMEOUT_S = 900


def check_ray_installed() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise LaspaError("--ray needs Ray: pip install 'laspa[ray]'") from None


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, in ``timeout`` seconds, a cluster address nothing answers at. ``auto``
    (the cluster this machine's ``ray start`` began) is left to Ray, which fails fast."""
    if address == "auto":
        return
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise LaspaError(
            f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}"
        )
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or str(error)
        raise LaspaError(f"no Ray cluster answers at {address}: {reason}") from None


@dataclass(frozen=True)
class Placement:
    """How many workers, and what each asks of the cluster."""

    workers: int
    cpus: float
    gpus: float


def placement(resources: dict[str, float], workers: int | None, device, threads) -> Placement:
    """One worker per GPU where the cluster has GPUs (and --device does not say cpu),
    else one per ``threads`` CPUs (1 when not given); ``workers`` overrides the count,
    and asking for more than the cluster holds is refused (the job would wait forever)."""
    cpus = float(threads or 1)
    gpus_there = int(resources.get("GPU", 0))
    use_gpus = gpus_there > 0 and (device is None or not str(device).startswith("cpu"))
    gpus = 1.0 if use_gpus else 0.0
    fits = gpus_there if use_gpus else int(resources.get("CPU", 0) // cpus)
    count = workers if workers is not None else max(1, fits)
    if count > fits:
        what = f"{gpus_there} GPUs" if use_gpus else f"{resources.get('CPU', 0):g} CPUs"
        raise LaspaError(f"--workers {count} needs more than the Ray cluster holds ({what})")
    return Placement(count, cpus, gpus)


def start(address: str | None, workers: int | None, threads: int | None) -> bool:
    """Join the cluster at ``address``, or start a local one sized for the workers (every
    core, or more CPUs than cores where --workers asks for them). Returns whether a local
    cluster was started."""
    import ray

    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    try:
        if address is not None:
            ray.init(address=address, **quiet)
            return False
        cpus = max(os.cpu_count() or 1, (workers or 1) * (threads or 1))
        # "local": a new cluster, never one that RAY_ADDRESS or an earlier `ray start`
        # on this machine names (which address=None would join)
        ray.init(
            address="local", num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet
        )
        return True
    except (ConnectionError, RuntimeError, ValueError) as error:
        doing = f"cannot join the Ray cluster at {address}" if address else "cannot start Ray"
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LaspaError(f"{doing}: {message}") from None


class EditorWorker:
    """A Ray Data actor: loads the Editor once, then applies ``handler`` to payloads."""

    def __init__(self, model, device, threads, handler: Callable[[Any, str], str]):
        from ..loading import library_warnings_silenced, load_editor

        with library_warnings_silenced():
            self.editor = load_editor(model, device, threads)
        self.handler = handler

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        return {"result": [self.handler(self.editor, str(p)) for p in batch["payload"]]}


def map_with_editors(
    payloads: Sequence[str],
    handler: Callable[[Any, str], str],
    *,
    model: str | None,
    device: str | None,
    threads: int | None,
    workers: int | None,
    address: str | None,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """``handler(editor, payload)`` for every payload on Ray workers that each hold one
    Editor; the results, in no particular order (each should say what it belongs to).

    A worker whose process dies is restarted by Ray and its unfinished payload is run
    again, so a handler must be safe to repeat (batch jobs write outputs atomically and
    skip those already written).
    """
    import ray
    import ray.data

    start(address, workers, threads)
    try:
        where = placement(ray.cluster_resources(), workers, device, threads)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        # every worker has its model loaded before the first payload goes out, so work
        # spreads over all of them (placement() refuses a pool larger than the cluster)
        context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
        data = ray.data.from_items(
            [{"payload": p} for p in payloads], override_num_blocks=max(1, len(payloads))
        )
        # Ray Data restarts a dead actor and reruns its unfinished batch (its actor pools
        # default to max_restarts=-1, max_task_retries=-1)
        mapped = data.map_batches(
            EditorWorker,
            fn_constructor_kwargs={
                "model": model, "device": device, "threads": threads, "handler": handler,
            },
            batch_size=1,
            # a worker holds the payload it runs and the next one, so it never waits for
            # the driver between payloads (on a busy 2-core machine, 68 ms of overhead a
            # payload with one in flight, 59 with two), and no more, so that work does
            # not pile up behind one worker
            compute=ray.data.ActorPoolStrategy(
                size=where.workers, max_tasks_in_flight_per_actor=2
            ),
            num_cpus=where.cpus,
            num_gpus=where.gpus,
        )  # fmt: skip
        results = []
        try:
            for row in mapped.iter_rows():
                results.append(str(row["result"]))
                if progress is not None:
                    progress(results[-1])
        except ray.exceptions.RayError as error:  # e.g. a worker that cannot load the model
            raise LaspaError(f"the Ray job failed: {_ray_reason(error)}") from None
        return results
    finally:
        ray.shutdown()  # stops a cluster started here; leaves a joined one running


def _ray_reason(error: BaseException) -> str:
    """The one line that says why: a laspa error raised in a worker, where there is one
    (Ray wraps it with the worker's traceback), else Ray's own first line."""
    cause = error
    while cause is not None:
        if isinstance(cause, LaspaError):
            return str(cause)
        cause = cause.__cause__ or getattr(cause, "cause", None)
    text = str(error).strip()
    for line in text.splitlines():
        if "LaspaError" in line or "ModelError" in line:
            return line.split(":", 1)[-1].strip()
    return text.splitlines()[0] if text else type(error).__name__


# ------------------------------------------------------------------ batch jobs
def run_group_payload(outdir: str, editor, payload: str) -> str:
    """A handler: one batch group, its records as JSON."""
    from .jobs import Group, run_group

    return json.dumps(run_group(editor, Group.from_json(payload), Path(outdir), worker_name()))


def worker_name() -> str:
    """The Ray worker running this: its host and process, as batch records name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_batch(
    job, outdir: Path, *, model, device, threads, workers, address, progress=None
) -> list[dict[str, Any]]:
    """Every group of ``job`` on Ray; the summary records (refused items first)."""
    records = [failure.record() for failure in job.refused]

    def tick(result: str) -> None:
        if progress is not None:
            progress(len(json.loads(result)))  # one record per item of the group

    payloads = [group.to_json() for group in job.groups]
    if payloads:
        handler = partial(run_group_payload, str(outdir.resolve()))
        results = map_with_editors(
            payloads, handler, model=model, device=device, threads=threads, workers=workers,
            address=address, progress=tick,
        )  # fmt: skip
        for result in results:
            records.extend(json.loads(result))
    return records
