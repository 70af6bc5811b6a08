"""``dpl``: the seed-compatible command line.

    dpl run --graph graph.json --inputs inputs.json --output_dir out
    dpl register --inputs inputs.json --output_dir out     # partitions for the Dagster UI
    dpl ui --output_dir out [--port 3000]                   # the Dagster UI on that output dir
    dpl init-instance --output_dir out --postgres           # the instance on Postgres
    dpl samples DIR                                         # sample media + DIR/inputs.json
    dpl nodes                                               # node names and params

Exit status of ``run`` and ``backfill``: 0 when every video ended processed or rejected
with a reason; 1 when any failed or failed an output check; 2 when the graph or inputs are
invalid (nothing was run); 3 with ``--strict`` when no video was processed (none found, or
every one rejected). A run that processed nothing says so in its last line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

# Light imports only: `dpl run` starts its worker processes before it imports Dagster and
# the nodes (see command_run); those are imported in the commands.
from dpl_assets import collector, fast_exit, processes, threads
from dpl_assets.catalog import Catalog
from dpl_assets.discovery import InputRoots, InputsError, load_inputs_file, parse_inputs
from dpl_assets.settings import DEFAULT_OUTPUT_DIR, instance_dir_for
from dpl_assets.storage.locks import exclusive
from dpl_assets.worker_pool import WorkerPool, default_workers, start_pool

if TYPE_CHECKING:
    from dpl_assets.graph import GraphPlan

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_NOTHING_PROCESSED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
"""``dpl run``'s exit status after Ctrl-C (128 + SIGINT, as shells report it)."""


def _say(message: str) -> None:
    print(f"dpl: {message}", file=sys.stderr, flush=True)


INSTANCE_LOCK = ".dpl-instance.lock"


POSTGRES_STORAGE = "postgres_storage.yaml"
"""The storage block ``dpl init-instance --postgres`` adds to the shipped dagster.yaml."""


def instance_config(postgres: bool) -> str:
    """The text of a new instance's dagster.yaml: the shipped one, with the Postgres
    storage block (``dpl_assets/configs/postgres_storage.yaml``) when ``postgres``."""
    configs = resources.files("dpl_assets").joinpath("configs")
    text = configs.joinpath("dagster.yaml").read_text("utf-8")
    if postgres:
        text += "\n" + configs.joinpath(POSTGRES_STORAGE).read_text("utf-8")
    return text


def _write_config(config: Path, text: str) -> None:
    partial = config.with_name(f".dagster.yaml.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(config)  # atomic: a process not using the lock never reads half


def _open_instance(output_dir: Path):
    """The persistent instance in ``instance_dir_for(output_dir)``.

    A new instance dir gets the shipped ``dpl_assets/configs/dagster.yaml`` (SQLite storage
    in that folder, no telemetry, the run queue and pools); an existing one is left as is.
    Creating the instance creates (or migrates) its SQLite databases: ``dpl`` processes
    started together on a new folder would each create them, and a database stamped twice
    ("more than one head present") breaks every later run. So one process at a time opens
    the instance, under a lock file in the instance dir; the others wait for it.
    """
    import dagster as dg

    home = instance_dir_for(output_dir)
    home.mkdir(parents=True, exist_ok=True)
    with exclusive(home / INSTANCE_LOCK):
        config = home / "dagster.yaml"
        if not config.exists():
            _write_config(config, instance_config(postgres=False))
        return dg.DagsterInstance.from_config(str(home))


def command_init_instance(args: argparse.Namespace) -> int:
    """Write the instance's dagster.yaml (SQLite, or Postgres with ``--postgres``); an
    existing one is kept unless ``--force``. Exit 2 when it exists."""
    home = instance_dir_for(args.output_dir.resolve())
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    with exclusive(home / INSTANCE_LOCK):
        if config.exists() and not args.force:
            _say(f"error: {config} exists (edit it, or --force to replace it)")
            return EXIT_INVALID
        _write_config(config, instance_config(postgres=args.postgres))
    storage = "PostgreSQL (DAGSTER_PG_* variables)" if args.postgres else "SQLite in " + str(home)
    _say(f"instance config {config}: storage in {storage}")
    return EXIT_OK


def _add_output_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output_dir", "--output-dir", dest="output_dir", type=Path,
        default=Path(os.environ.get("DPL_OUTPUT_DIR", DEFAULT_OUTPUT_DIR)),
        help=f"output root (default: $DPL_OUTPUT_DIR or {DEFAULT_OUTPUT_DIR})",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a graph on the inputs (incremental)")
    backfill = commands.add_parser(
        "backfill",
        help="rescan the last run's inputs and run its graph on what is missing or failed "
        "(what the backfill schedule does)",
    )
    for parser_ in (run, backfill):
        required = parser_ is run
        parser_.add_argument(
            "--graph", type=Path, required=required,
            help="graph JSON (list of nodes)" + ("" if required else "; default: the last run's"),
        )  # fmt: skip
        parser_.add_argument(
            "--inputs", type=Path, required=required,
            help="inputs JSON (datatype -> root)" + ("" if required else "; default: the last"),
        )  # fmt: skip
        _add_output_dir(parser_)
        parser_.add_argument("--report_name", "--report-name", default="report.json")
        parser_.add_argument(
            "--chunk_size", "--chunk-size", type=int, default=50,
            help="videos per Dagster run (models load once per process)",
        )  # fmt: skip
        parser_.add_argument(
            "--workers", type=int, default=None,
            help="processes running videos in parallel (default: $DPL_WORKERS, else one per "
            "core, at most 4, and at most one per GPU when the graph runs a GPU model; "
            "1: everything in this process)",
        )  # fmt: skip
        parser_.add_argument(
            "--retry-rejected", action="store_true",
            help="forget earlier rejections and try those videos again",
        )  # fmt: skip
        parser_.add_argument(
            "--executor", choices=("in_process", "celery"),
            default=os.environ.get("DPL_EXECUTOR") or "in_process",
            help="where steps run: in this process and --workers processes (default), or on "
            "Celery workers (DPL_CELERY_BROKER, DPL_CELERY_BACKEND; see README, Operations); "
            "default: $DPL_EXECUTOR, else in_process",
        )  # fmt: skip
        parser_.add_argument("--verbose", action="store_true", help="show Dagster's step logs")
        parser_.add_argument(
            "--strict", action="store_true",
            help=f"exit with status {EXIT_NOTHING_PROCESSED} when no video was processed",
        )  # fmt: skip

    register = commands.add_parser("register", help="register videos as Dagster partitions")
    register.add_argument("--inputs", type=Path, required=True)
    _add_output_dir(register)

    ui = commands.add_parser(
        "ui",
        help="the Dagster UI (dagster dev) on an output dir's instance: DAGSTER_HOME if set, "
        "else OUTPUT_DIR/.dagster",
    )
    _add_output_dir(ui)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)

    init = commands.add_parser(
        "init-instance",
        help="write the output dir's instance config (DAGSTER_HOME if set, else "
        "OUTPUT_DIR/.dagster/dagster.yaml): SQLite in that folder, or --postgres",
    )
    _add_output_dir(init)
    init.add_argument(
        "--postgres", action="store_true",
        help="runs, events and schedules in PostgreSQL: DAGSTER_PG_HOST, DAGSTER_PG_PORT, "
        "DAGSTER_PG_DB, DAGSTER_PG_USERNAME, DAGSTER_PG_PASSWORD, read when it is opened",
    )  # fmt: skip
    init.add_argument("--force", action="store_true", help="replace an existing dagster.yaml")

    samples = commands.add_parser("samples", help="make sample media and an inputs.json")
    samples.add_argument("folder", type=Path)

    commands.add_parser("nodes", help="list graph node names and their params")
    return parser


def command_run(args: argparse.Namespace) -> int:
    # The worker processes start first, before this process imports Dagster and the nodes
    # (~1.4 s) and reads the graph: their own start-up (the same imports, then the graph's
    # model libraries) overlaps all that follows.
    started = _start_workers(args)
    try:
        return _run(args, started)
    finally:
        if started is not None:
            started.close()  # done by then unless the graph or inputs were invalid


def _start_workers(args: argparse.Namespace) -> WorkerPool | None:
    """The workers ``dpl run`` will most likely use, started before the graph is read:
    ``--workers`` or ``DPL_WORKERS``, else one per core (a graph with a GPU model, on a
    machine with fewer GPUs than that, gets a new pool once it is read). None for one
    process, Celery, an invalid count (reported once the graph is read), or more
    processes than cores (they are started once the graph is read, as they would slow
    this process's own start-up, and an invalid graph's message, several times over)."""
    if args.executor == "celery":
        return None
    try:
        workers = args.workers or default_workers()
    except ValueError:  # a bad DPL_WORKERS
        return None
    return start_pool(workers) if workers <= threads.cores() else None


def _run(args: argparse.Namespace, started: WorkerPool | None) -> int:
    try:
        with collector.paused(freeze=True):  # Dagster and the nodes: see dpl_assets.collector
            from dpl_assets import interrupts
            from dpl_assets.cluster import CeleryUnavailable, broker_urls
            from dpl_assets.graph import GraphError
            from dpl_assets.runner import run_plan, start_worker_pool
            from dpl_assets.storage import disk_room, frame_cache
    except KeyboardInterrupt:  # Ctrl-C while this process starts: nothing was done yet
        _say("interrupted before anything was done")
        return EXIT_INTERRUPTED

    output_dir = args.output_dir.resolve()
    try:
        plan, inputs = _graph_and_inputs(args, Catalog(output_dir))
        if args.chunk_size < 1:
            raise GraphError("--chunk_size must be at least 1")
        if args.workers is not None and args.workers < 1:
            raise GraphError("--workers must be at least 1")
        try:
            uses_gpu = any(spec.needs_gpu for spec in plan.node_of.values())
            if uses_gpu and not args.workers and started is not None:
                # Counting GPUs imports torch (~0.6 s here): the workers started above get
                # their model libraries first (kept below when the count stays theirs).
                start_worker_pool(plan, started.count + 1, started)  # configures `started`
            workers = args.workers or default_workers(uses_gpu)
            frame_cache.budget_from_env()  # a bad DPL_FRAME_CACHE_MB, before any work
            disk_room.ensure_room(output_dir)  # a bad DPL_MIN_FREE_MB or a full disk
        except ValueError as error:  # a bad DPL_WORKERS, DPL_FRAME_CACHE_MB or DPL_MIN_FREE_MB
            raise GraphError(str(error)) from None
        except disk_room.NoRoom as error:  # nothing started: the instance not even opened
            raise GraphError(str(error)) from None
        celery = args.executor == "celery"
        if celery:
            broker_urls()  # raises CeleryUnavailable: nothing is done then
        # The workers started above (a new pool if the graph wants another count) import
        # its model libraries while this process opens the instance (creating its
        # databases, ~1.3 s for a new output dir) and registers the videos.
        pool = None if celery else start_worker_pool(plan, workers, started)
        try:
            with _open_instance(output_dir) as instance:
                outcome = run_plan(
                    plan, inputs, output_dir, instance,
                    chunk_size=args.chunk_size,
                    workers=workers,
                    retry_rejected=args.retry_rejected,
                    log_level="INFO" if args.verbose else "WARNING",
                    progress=_say,
                    celery=celery,
                    pool=pool,
                )  # fmt: skip
        finally:
            if pool is not None:
                pool.close()  # run_plan closed it, unless opening the instance failed
    except (GraphError, InputsError, CeleryUnavailable) as error:
        _say(f"error: {error}")
        return EXIT_INVALID
    except KeyboardInterrupt:  # Ctrl-C outside the runs (they stop on it themselves)
        _say("interrupted: what was saved is kept; run the same command again to go on")
        return EXIT_INTERRUPTED
    report_path = output_dir / args.report_name
    counts = outcome.report.write(report_path, outcome.dataset_outputs)
    notable = outcome.report.notable()
    outcome.report.close()
    for report in notable:
        if report.status != "processed":
            _say(f"{report.status}: {report.video_id}: {report.reason}")
        for key, problems in report.failed_checks.items():
            _say(f"check failed: {report.video_id}: {key}: {'; '.join(problems)}")
    _say(
        f"{counts['processed']} processed, {counts['rejected']} rejected, "
        f"{counts['failed']} failed, {counts['failed_checks']} with failed output checks; "
        f"report: {report_path}"
    )
    if interrupts.requested():
        _say(
            "interrupted: the runs stopped after the videos being computed (what was saved "
            "is kept; the others are reported failed); run the same command again to go on"
        )
        return EXIT_INTERRUPTED
    if counts["processed"] == 0:
        _say(nothing_processed(counts, inputs))
    if counts["failed"] or counts["failed_checks"]:
        return EXIT_FAILED
    if args.strict and counts["processed"] == 0:
        return EXIT_NOTHING_PROCESSED
    return EXIT_OK


def nothing_processed(counts: dict[str, int], inputs: InputRoots) -> str:
    """The last line of a run that processed no video: why, in plain words."""
    if not counts["rejected"] and not counts["failed"]:
        roots = "; ".join(
            f"{key}: {', '.join(str(root) for root in roots)}"
            for key, roots in inputs.roots.items()
        )
        filtered = inputs.include or inputs.exclude
        filters = " that pass the include/exclude filters" if filtered else ""
        return f"nothing was processed: no input files{filters} were found in {roots}"
    held = " and ".join(
        f"{counts[status]} {status}" for status in ("rejected", "failed") if counts[status]
    )
    return f"nothing was processed: every video was rejected or failed ({held}; reasons above)"


def _graph_and_inputs(args: argparse.Namespace, catalog: Catalog) -> tuple[GraphPlan, InputRoots]:
    """The graph and inputs named on the command line, else the ones the last run saved."""
    from dpl_assets.graph import GraphError, load_graph_file, plan_graph

    if args.graph is not None:
        plan = load_graph_file(args.graph)
    elif (saved_graph := catalog.saved_graph()) is not None:
        plan = plan_graph(saved_graph)
    else:
        raise GraphError(f"no --graph given and no earlier run in {catalog.output_dir}")
    if args.inputs is not None:
        inputs = load_inputs_file(args.inputs)
    elif (saved_inputs := catalog.saved_inputs()) is not None:
        inputs = parse_inputs(saved_inputs)
    else:
        raise InputsError(f"no --inputs given and no earlier run in {catalog.output_dir}")
    return plan, inputs


def command_register(args: argparse.Namespace) -> int:
    from dpl_assets.runner import register_videos
    from dpl_assets.storage.store import ArtifactStore

    try:
        inputs = load_inputs_file(args.inputs)
    except InputsError as error:
        _say(f"error: {error}")
        return EXIT_INVALID
    output_dir = args.output_dir.resolve()
    registration = register_videos(_open_instance(output_dir), ArtifactStore(output_dir), inputs)
    _say(
        f"{len(registration.all_ids)} videos registered ({len(registration.new_ids)} new, "
        f"{len(registration.changed_ids)} changed, {len(registration.removed_ids)} removed) "
        f"in {output_dir}"
    )
    for video_id in registration.new_ids:
        print(video_id)
    return EXIT_OK


DEV_SUPERSEDED = "ignore:Function `dev_command` is superseded"
"""A warnings filter for the one line ``dagster dev`` prints on every start: its successor,
``dg dev``, is a separate package (dagster-dg-cli) that this dagster release does not have."""


def command_ui(args: argparse.Namespace) -> int:
    """``dagster dev`` on the output dir's instance, in place of this process (Ctrl-C stops it).

    The instance is ``DAGSTER_HOME`` when set, else ``{output_dir}/.dagster``: the one
    ``dpl run`` and ``dpl register`` use, created with the shipped dagster.yaml if new.
    """
    import shutil
    import signal

    output_dir = args.output_dir.resolve()
    home = instance_dir_for(output_dir)
    _open_instance(output_dir).dispose()
    dagster = Path(sys.executable).with_name("dagster")
    program = str(dagster) if dagster.exists() else shutil.which("dagster")
    if program is None:
        _say("error: the dagster command is not installed beside this Python")
        return EXIT_INVALID
    warnings = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), DEV_SUPERSEDED)))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DPL_OUTPUT_DIR": str(output_dir),
        "PYTHONWARNINGS": warnings,
    }
    _say(
        f"Dagster UI on http://{args.host}:{args.port} for {output_dir} (instance: {home}); "
        "Ctrl-C stops it"
    )
    # Started from a script with `&`, SIGINT arrives ignored, and dagster dev then ignores
    # Ctrl-C and SIGTERM (see scripts/dagster_ui.sh): give it back its default first.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    argv = [program, "dev", "-m", "dpl_assets", "-h", args.host, "-p", str(args.port)]
    os.execve(program, argv, env)  # noqa: S606 (an argument list: no shell)
    return EXIT_OK  # not reached


def command_samples(args: argparse.Namespace) -> int:
    from dpl_assets.samples import make_samples

    inputs = make_samples(args.folder)
    _say(f"sample media in {args.folder}; inputs file: {inputs}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "backfill"):
        return command_run(args)
    if args.command == "register":
        return command_register(args)
    if args.command == "ui":
        return command_ui(args)
    if args.command == "init-instance":
        return command_init_instance(args)
    if args.command == "samples":
        return command_samples(args)
    from dpl_assets.graph import node_reference

    print(node_reference())
    return EXIT_OK


def console_main() -> int:
    """The ``dpl`` command: :func:`main`, whose status then ends the process without the
    interpreter's teardown (:mod:`dpl_assets.fast_exit`; ~2 s of one core after a run)."""
    processes.show_native_crashes()  # a crash in native code (HDF5, FFmpeg...) shows where
    status = main()
    fast_exit.set_status(status)
    return status


if __name__ == "__main__":
    sys.exit(console_main())
