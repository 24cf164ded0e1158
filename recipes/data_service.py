"""`stenograph data-service`: run the training input pipeline on other machines' CPUs.

    stenograph data-service dispatcher --port 5050
    stenograph data-service worker --dispatcher HOST:5050 --port 5051   # on each data machine
    stenograph train --config CONFIG --exp-dir EXP --data-service grpc://HOST:5050

TensorFlow's tf.data service (``tf.data.experimental.service``) does the work: the
trainer sends its input pipeline's graph to the dispatcher, the workers run it and
stream finished batches (features, lengths, labels) back. The training data must be
a shard folder (``stenograph shard``): its pipeline decodes audio with graph ops
only, which is what lets it travel as a graph.

Processing mode: ``distributed_epoch``. The shard file list starts the pipeline, so
the dispatcher hands each shard file to one worker: an epoch is the corpus once, no
utterance lost or repeated, and adding workers adds throughput without changing what
an epoch is. (``parallel_epochs`` would have every worker run the whole corpus, so
two workers would show each utterance twice per epoch.) Each worker buckets and
batches its own files, so an epoch ends with up to one partial batch per bucket per
worker instead of per pipeline.

A worker lost mid-epoch: TensorFlow's client keeps retrying that worker's task and
the epoch cannot end without it (in TF 2.17-2.21 the dispatcher does not reassign a
lost worker's files). Training therefore watches the stream: when no batch arrives
for ``--data-service-timeout`` seconds (default 300) it stops with an error naming
the service; the last checkpoint is intact, so rerunning the command resumes once
the workers are back. A worker restarted at the same address within that time
rejoins and the epoch goes on.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

_log = logging.getLogger("stenograph.data_service")

PROCESSING_MODE = "distributed_epoch"
DEFAULT_TIMEOUT_SECONDS = 300.0
STALL_MESSAGE = "no batch from the tf.data service"


def service_address(service: str) -> str:
    """``grpc://HOST:PORT`` (the form ``distribute`` takes) from ``HOST:PORT`` or itself.

    Raises:
        ValueError: If there is no port.
    """
    address = service if "://" in service else f"grpc://{service}"
    host_port = address.split("://", 1)[1]
    if ":" not in host_port or not host_port.rsplit(":", 1)[1].isdigit():
        raise ValueError(
            f"a tf.data service address needs a host and a port (grpc://HOST:PORT). "
            f"Received: {service!r}"
        )
    return address


def distribute(dataset: tf.data.Dataset, service: str) -> tf.data.Dataset:
    """`dataset`, produced by the tf.data service's workers in ``distributed_epoch`` mode.

    Each iteration of the result is a new job on the service (one per epoch).
    """
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=PROCESSING_MODE, service=service_address(service)
        )
    )


class DataServiceStalledError(RuntimeError):
    """No batch arrived from the tf.data service within the allowed time."""


def with_stall_limit(dataset: tf.data.Dataset, seconds: float, service: str) -> tf.data.Dataset:
    """`dataset`, failing with a clear error when no element arrives for `seconds`.

    A thread on the trainer pulls the service's batches into a small queue; the
    returned dataset waits on that queue with a deadline. This is per batch and on
    the trainer only: nothing of it is sent to the workers.

    Args:
        dataset: Usually `distribute(...)`'s result.
        seconds: Longest wait for one batch.
        service: The service's address, for the message.

    Returns:
        A dataset with the same elements.
    """

    def batches() -> Iterator[Any]:
        pending: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        threading.Thread(target=_pump, args=(dataset, pending, stop), daemon=True).start()
        try:
            while True:
                try:
                    kind, value = pending.get(timeout=seconds)
                except queue.Empty:
                    message = (
                        f"{STALL_MESSAGE} at {service} for {seconds:g} s: is a data-service "
                        "worker down? Training stopped; the last checkpoint is intact, rerun "
                        "the command to resume once the workers are up"
                    )
                    _log.error("%s", message)
                    raise DataServiceStalledError(message) from None
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            stop.set()

    return tf.data.Dataset.from_generator(batches, output_signature=dataset.element_spec)


def _pump(dataset: tf.data.Dataset, pending: queue.Queue, stop: threading.Event) -> None:
    """Moves `dataset`'s elements into `pending` until it ends or `stop` is set."""
    try:
        for element in dataset:
            while not stop.is_set():
                try:
                    pending.put(("element", element), timeout=1.0)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        pending.put(("end", None))
    except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
        pending.put(("error", error))


def run_until_signalled(server: Any, name: str) -> None:
    """Blocks until SIGINT or SIGTERM, then stops `server` (a tf.data service server)."""
    stopping = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        _log.info("%s: %s received, shutting down", name, signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping.wait(timeout=1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server._stop()  # the servers' own shutdown (no public stop in TF 2.17-2.21)
    _log.info("%s stopped", name)


def start_dispatcher(port: int, worker_timeout_ms: int | None = None) -> Any:
    """Starts a dispatcher on `port` (0: any free port); returns the server."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, worker_timeout_ms=worker_timeout_ms
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int = 0, host: str | None = None) -> Any:
    """Starts a worker registered with `dispatcher` (``HOST:PORT``); returns the server.

    Args:
        dispatcher: The dispatcher's address, with or without ``grpc://``.
        port: The worker's port (0: any free port).
        host: The name trainers reach this machine by (default: its fully qualified
            host name).
    """
    dispatcher = service_address(dispatcher).split("://", 1)[1]
    host = host or socket.getfqdn()
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher, worker_address=f"{host}:%port%", port=port
    )
    return tf.data.experimental.service.WorkerServer(config)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `stenograph data-service dispatcher|worker`."""
    parser = subparsers.add_parser(
        "data-service",
        help="run a tf.data service dispatcher or worker (the input pipeline on other CPUs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    roles = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    dispatcher = roles.add_parser("dispatcher", help="the coordinator trainers connect to")
    dispatcher.add_argument("--port", type=int, required=True, help="port to listen on")
    dispatcher.set_defaults(handler=run_dispatcher)
    worker = roles.add_parser("worker", help="runs input pipelines for the dispatcher")
    worker.add_argument("--dispatcher", required=True, help="the dispatcher's HOST:PORT")
    worker.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    worker.add_argument(
        "--host",
        default=None,
        help="the name trainers reach this machine by (default: its fully qualified name)",
    )
    worker.set_defaults(handler=run_worker)


def run_dispatcher(args: argparse.Namespace) -> int:
    """Runs `stenograph data-service dispatcher` until interrupted."""
    server = start_dispatcher(args.port)
    _log.info("tf.data service dispatcher at %s (Ctrl-C or SIGTERM stops it)", server.target)
    print(f"dispatcher ready: {server.target}", flush=True)
    run_until_signalled(server, "dispatcher")
    return 0


def run_worker(args: argparse.Namespace) -> int:
    """Runs `stenograph data-service worker` until interrupted."""
    server = start_worker(args.dispatcher, args.port, args.host)
    _log.info("tf.data service worker of %s (Ctrl-C or SIGTERM stops it)", args.dispatcher)
    print(f"worker ready: dispatcher {args.dispatcher}", flush=True)
    run_until_signalled(server, "worker")
    return 0


def served(
    dataset: tf.data.Dataset,
    service: str,
    from_shards: bool,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> tf.data.Dataset:
    """The training `dataset` run by the tf.data service at `service`, with a stall limit.

    Raises:
        ValueError: If the training data is not a shard folder (the file pipeline
            decodes in Python, which cannot run on the service's workers).
    """
    if not from_shards:
        raise ValueError(
            "--data-service needs the training data as shards, whose pipeline is all graph "
            "ops: write them with `stenograph shard TRAIN.jsonl OUT --shards N` and train with "
            "--train-manifest OUT"
        )
    return with_stall_limit(distribute(dataset, service), timeout, service)
