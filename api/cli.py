"""``catalogctl``: run the Strata server and manage it over its REST API.

Every command but ``serve`` talks to a running server (``--server``, else ``$CATALOG_SERVER``,
else http://127.0.0.1:8080), sending the API token: ``--token``, else ``$CATALOG_API_TOKEN``,
else the file ``api-token`` a server on this host wrote into its data dir (``--data-dir``, else
``$CATALOG_DATA_DIR``, else ``./strata-data``). Output is aligned text, or the raw JSON with
``--json``. Errors print one line ``catalogctl: error: <message>`` on stderr; exit code 2 for
usage or invalid input, 1 for any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, NoReturn

from api.client import DEFAULT_SERVER, CatalogClient, find_token
from catalog.exceptions import CatalogError, InvalidInputError

PROG = "catalogctl"
PARTITIONS_SHOWN = 100


class UsageError(Exception):
    """Bad command line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"invalid option '{text}' (expected KEY=VALUE)")
    return key.strip(), value


def _job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid job id '{text}' (a positive number)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid job id '{text}' (a positive number)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``catalogctl`` argument parser."""
    # --server/--json are accepted before or after the command.
    common = _Parser(add_help=False)
    common.add_argument("--server", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    common.add_argument("--token", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    # Where a server on this host keeps its token (serve has its own --data-dir).
    client_common = _Parser(add_help=False)
    client_common.add_argument("--data-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    cc = [common, client_common]

    parser = _Parser(prog=PROG, description="Strata catalog: serve, attach, sync and browse.")
    parser.add_argument("--server", default=None, metavar="URL",
                        help=f"REST URL of Strata (default: $CATALOG_SERVER or {DEFAULT_SERVER})")
    parser.add_argument("--json", action="store_true", default=False,
                        help="print the raw JSON answers")
    parser.add_argument("--token", default=None, metavar="TOKEN",
                        help="REST API token (default: $CATALOG_API_TOKEN, else the server's "
                             "DATA_DIR/api-token on this host)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="data dir of a server on this host, to read its token from "
                             "(default: $CATALOG_DATA_DIR or ./strata-data)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", parents=[common], help="run the Thrift and REST servers",
                       description="Run Strata; flags override the CATALOG_* environment.")
    p.add_argument("--data-dir", metavar="DIR", help="state store directory")
    p.add_argument("--host", metavar="H", help="address to bind")
    p.add_argument("--thrift-port", type=int, metavar="PORT", help="HMS Thrift port (9083)")
    p.add_argument("--trino-thrift-port", type=int, metavar="PORT",
                   help="HMS Thrift port for Trino: local file: locations as local:/// "
                        "(9084; 0 disables)")
    p.add_argument("--rest-port", type=int, metavar="PORT", help="REST port (8080)")
    p.add_argument("--s3-port", type=int, metavar="PORT",
                   help="S3 gateway port (default $CATALOG_S3_PORT; 0: off)")
    p.add_argument("--sync-interval", type=float, metavar="SECONDS",
                   help="default periodic sync interval (0 disables)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("attach-db", parents=cc, help="attach a database of a UDB")
    p.add_argument("udb_type", metavar="UDB_TYPE", help="hive | directory")
    p.add_argument("uri", metavar="URI", help="e.g. thrift://metastore:9083")
    p.add_argument("source_db", metavar="SOURCE_DB", help="database name in the UDB")
    p.add_argument("--db", metavar="NAME", help="name in Strata (default: SOURCE_DB)")
    p.add_argument("-o", "--option", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="attach option (repeatable)")
    p.set_defaults(func=_cmd_attach)

    p = sub.add_parser("detach-db", parents=cc, help="detach a database")
    p.add_argument("db", metavar="DB")
    p.set_defaults(func=_cmd_detach)

    p = sub.add_parser("sync", parents=cc, help="sync a database (or one table) now")
    p.add_argument("db", metavar="DB")
    p.add_argument("table", metavar="TABLE", nargs="?")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("status", parents=cc,
                       help="listeners, databases with their last sync, periodic sync")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("ls", parents=cc,
                       help="list databases, the tables of DB, or show DB TABLE")
    p.add_argument("db", metavar="DB", nargs="?")
    p.add_argument("table", metavar="TABLE", nargs="?")
    p.set_defaults(func=_cmd_ls)

    p = sub.add_parser("transform", parents=cc,
                       help="transform a table (or some partitions) into Parquet",
                       description="Queue a transformation job and print its id; with --wait, "
                                   "follow it with a progress bar until it ends.")
    p.add_argument("db", metavar="DB")
    p.add_argument("table", metavar="TABLE")
    p.add_argument("-d", "--definition", metavar="DEFINITION",
                   help="e.g. 'file.count.max=10; file.size.min=256MB; "
                        "file.parquet.compression=zstd' (over the database's default)")
    p.add_argument("--partition", action="append", default=[], metavar="SPEC",
                   help="a partition name, k=v[/k2=v2...] (repeatable; default: all)")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.set_defaults(func=_cmd_transform)

    p = sub.add_parser("transform-status", parents=cc,
                       help="show a transformation job, or list the recent ones")
    p.add_argument("job", metavar="JOB", nargs="?", type=_job_id)
    p.add_argument("--db", metavar="DB", help="only jobs of this database (list)")
    p.add_argument("--table", metavar="TABLE", help="only jobs of this table (list)")
    p.set_defaults(func=_cmd_transform_status)

    p = sub.add_parser("transform-cancel", parents=cc, help="cancel a transformation job")
    p.add_argument("job", metavar="JOB", type=_job_id)
    p.set_defaults(func=_cmd_transform_cancel)

    fs = sub.add_parser("fs", parents=cc, help="the namespace: mounts and files",
                        description="Mount storages into Strata's namespace and browse it.")
    fs_sub = fs.add_subparsers(dest="fs_command", metavar="FS_COMMAND", required=True)
    p = fs_sub.add_parser("mount", parents=cc, help="mount a storage at a namespace path")
    p.add_argument("path", metavar="NS_PATH", help="e.g. /lake")
    p.add_argument("ufs_uri", metavar="UFS_URI", help="file:///data or s3://bucket/prefix")
    p.add_argument("-o", "--option", type=_key_value, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="readonly=true, s3.endpoint=..., s3.aws-access-key=..., "
                        "s3.aws-secret-key=..., s3.region=..., s3.path-style-access=...")
    p.set_defaults(func=_cmd_fs_mount)
    p = fs_sub.add_parser("unmount", parents=cc, help="remove a mount")
    p.add_argument("path", metavar="NS_PATH")
    p.set_defaults(func=_cmd_fs_unmount)
    p = fs_sub.add_parser("mounts", parents=cc, help="list the mounts")
    p.set_defaults(func=_cmd_fs_mounts)
    p = fs_sub.add_parser("ls", parents=cc, help="list a namespace directory")
    p.add_argument("path", metavar="NS_PATH", nargs="?", default="/")
    p.set_defaults(func=_cmd_fs_ls)
    p = fs_sub.add_parser("stat", parents=cc, help="show one file or directory")
    p.add_argument("path", metavar="NS_PATH")
    p.set_defaults(func=_cmd_fs_stat)
    p = fs_sub.add_parser("cat", parents=cc, help="print a file's bytes")
    p.add_argument("path", metavar="NS_PATH")
    p.set_defaults(func=_cmd_fs_cat)
    for name, text in (("pin", "pin files in the cache (never evicted)"),
                       ("unpin", "remove a pin"),
                       ("free", "drop the cached copies of files (refused while unpersisted)"),
                       ("load", "read files into the cache"),
                       ("persist", "write not yet persisted files to under storage now")):
        p = fs_sub.add_parser(name, parents=cc, help=text)
        p.add_argument("path", metavar="NS_PATH", help="a file or a directory")
        p.set_defaults(func=_cmd_fs_cache, cache_action=name)
    p = fs_sub.add_parser("set-ttl", parents=cc, help="expire cached files after SECONDS",
                          description="Files at NS_PATH expire SECONDS after they were cached: "
                                      "their blocks are dropped (free) or the files deleted "
                                      "(delete).")
    p.add_argument("path", metavar="NS_PATH", help="a file or a directory")
    p.add_argument("seconds", metavar="SECONDS", type=_seconds_arg)
    p.add_argument("--action", dest="ttl_action", choices=("free", "delete"), default="free",
                   help="what happens on expiry (default: free)")
    p.set_defaults(func=_cmd_fs_cache, cache_action="ttl")

    cache = sub.add_parser("cache", parents=cc, help="the block store",
                           description="Show the tiered block store.")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="CACHE_COMMAND",
                                     required=True)
    p = cache_sub.add_parser("report", parents=cc,
                             help="per tier and directory: capacity, used, blocks, pinned, "
                                  "hit ratio")
    p.set_defaults(func=_cmd_cache_report)
    return parser


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid seconds '{text}' (a number >= 0)")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run ``catalogctl``; returns the exit code (never raises, never prints a traceback)."""
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except (UsageError, InvalidInputError) as e:
        return _fail(str(e), 2)
    except CatalogError as e:
        return _fail(str(e), 1)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, no traceback
        return _fail(f"unexpected {type(e).__name__}: {e}", 1)


def _fail(message: str, code: int) -> int:
    one_line = " ".join(message.split()) or "failed"
    print(f"{PROG}: error: {one_line}", file=sys.stderr)
    return code


def _client(args: argparse.Namespace) -> CatalogClient:
    return CatalogClient(args.server or os.environ.get("CATALOG_SERVER") or DEFAULT_SERVER,
                         token=find_token(getattr(args, "token", None),
                                          getattr(args, "data_dir", None)))


# -- serve ---------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from catalog.config import Settings

    given = {"data_dir": args.data_dir, "host": args.host, "thrift_port": args.thrift_port,
             "trino_thrift_port": args.trino_thrift_port,
             "rest_port": args.rest_port, "s3_port": args.s3_port,
             "sync_interval_s": args.sync_interval}
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        raise UsageError("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                   for err in e.errors())) from e
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    from api.server import StrataServer  # the servers' imports are heavy: only for serve

    try:
        server = StrataServer(settings)
    except OSError as e:
        raise CatalogError(f"cannot start Strata: {e}") from e

    def stop(signum: int, frame: object) -> None:
        logging.getLogger(PROG).info("%s: stopping", signal.Signals(signum).name)
        server.rest.should_exit = True  # serve_forever returns and stops everything

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    except (OSError, RuntimeError) as e:
        with suppress(Exception):
            server.stop()
        raise CatalogError(f"cannot start Strata: {e}") from e
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


# -- commands over REST --------------------------------------------------------------------------


def _cmd_attach(args: argparse.Namespace) -> int:
    with _client(args) as client:
        report = client.attach_database(args.udb_type, args.uri, args.source_db, name=args.db,
                                        options=dict(args.option))
    if args.json:
        return _print_json(report)
    print(f"attached '{report['db']}' ({args.udb_type} {args.uri} {args.source_db}): "
          f"{report['tables']['added']} tables, {report['partitions']['added']} partitions "
          f"in {report['duration_s']:g}s")
    return 0


def _cmd_detach(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.detach_database(args.db)
    if args.json:
        return _print_json({"detached": args.db})
    print(f"detached '{args.db}'")
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    with _client(args) as client:
        report = client.sync(args.db, args.table)
    if args.json:
        return _print_json(report)
    what = f"{report['db']}.{args.table}" if args.table else report["db"]
    print(f"synced '{what}' in {report['duration_s']:g}s: tables {_counts(report['tables'])}; "
          f"partitions {_counts(report['partitions'])}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        st = client.status()
    if args.json:
        return _print_json(st)
    print(f"server {client.base_url}: {st['status']}")
    print("\nlisteners:")
    if st["listeners"]:
        _print_rows(["NAME", "PROTOCOL", "ADDRESS"],
                    [[li["name"], li["protocol"], f"{li['host']}:{li['port']}"]
                     for li in st["listeners"]], indent="  ")
    else:
        print("  - (not known)")
    sched = st.get("scheduler")
    syncs = {s["db"]: s for s in (sched or {}).get("syncs", [])}
    print("\nscheduler: " + ("not running" if not sched or not sched["running"] else
                             f"running, {len(syncs)} periodic sync(s)"))
    print("\ndatabases:")
    if not st["databases"]:
        print("  - (none attached)")
        return 0
    rows, errors = [], []
    for d in st["databases"]:
        last = d.get("last_sync") or {}
        errs = last.get("errors") or []
        result = "-" if not last else (f"{len(errs)} error(s)" if errs else "ok")
        job = syncs.get(d["name"])
        rows.append([d["name"], d["udb_type"], d["table_count"], _time(d.get("last_sync_at")),
                     result, f"{job['interval_s']:g}s" if job else "off",
                     _time(job["next_sync_at"]) if job else None,
                     job["failures"] if job else None])
        errors += [f"{d['name']}: {e}" for e in errs]
    _print_rows(["NAME", "TYPE", "TABLES", "LAST SYNC", "RESULT", "EVERY", "NEXT SYNC",
                 "FAILURES"], rows, indent="  ")
    if errors:
        print("\nlast sync errors:")
        for line in errors:
            print(f"  {line}")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.db is None:
            return _ls_databases(args, client.list_databases())
        if args.table is None:
            return _ls_tables(args, client.list_tables(args.db))
        table = client.get_table(args.db, args.table)
        page = (client.partitions(args.db, args.table, limit=PARTITIONS_SHOWN)
                if table.get("partition_keys") else None)
    if args.json:
        return _print_json({"table": table, "partitions": page})
    _show_table(table, page)
    return 0


# -- transformations -----------------------------------------------------------------------------

#: Seconds between two looks at a job followed with --wait.
POLL_S = 0.5


def _cmd_transform(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.transform(args.db, args.table, args.definition, args.partition or None)
        if not args.wait:
            if args.json:
                return _print_json(job)
            print(f"job {job['id']} {job['state']}: {job['db']}.{job['table']}, "
                  f"{job['partitions_total']} partition(s), {job['definition']}")
            return 0
        if not args.json:
            print(f"job {job['id']}: {job['db']}.{job['table']}, "
                  f"{job['partitions_total']} partition(s), {job['definition']}")
        try:
            job = _follow(client, int(job["id"]), quiet=bool(args.json))
        except KeyboardInterrupt:
            print(f"\njob {job['id']} goes on; cancel it with: {PROG} transform-cancel "
                  f"{job['id']}", file=sys.stderr)
            return 130
    if args.json:
        _print_json(job)
    else:
        _print_job_end(job)
    return 0 if job["state"] == "succeeded" else 1


def _follow(client: CatalogClient, job_id: int, quiet: bool) -> dict[str, Any]:
    """Poll a job until it ends, drawing a live progress bar (bytes read, rows, rate, ETA)
    on a terminal-like stderr unless ``quiet``."""
    import time

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    job = client.transform_job(job_id)
    if quiet:
        while job["state"] in ("queued", "running"):
            time.sleep(POLL_S)
            job = client.transform_job(job_id)
        return job
    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=24),
               TaskProgressColumn(), DownloadColumn(), TextColumn("{task.fields[rows]} rows"),
               TransferSpeedColumn(), TextColumn("{task.fields[parts]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"job {job_id}", total=job["bytes_total"] or None, rows="0",
                            parts="")
        while True:
            total = job["bytes_total"] or None
            bar.update(task, total=total, completed=job["bytes_read"],
                       description=f"job {job_id} {job['state']}",
                       rows=f"{max(job['rows_read'], job['rows_written']):,}",
                       parts=(f"{job['partitions_done']}/{job['partitions_total']} partitions"
                              if job["partitions_total"] > 1 else ""))
            if job["state"] not in ("queued", "running"):
                if job["state"] == "succeeded":
                    bar.update(task, completed=total or 1, total=total or 1)
                return job
            time.sleep(POLL_S)
            job = client.transform_job(job_id)


def _print_job_end(job: dict[str, Any]) -> None:
    took = job.get("duration_s")
    took_text = f" in {took:.1f} s" if isinstance(took, (int, float)) else ""
    if job["state"] == "succeeded":
        print(f"job {job['id']} succeeded{took_text}: {job['rows_written']:,} rows, "
              f"{_mb(job['bytes_read'])} read, {job['files_written']} Parquet file(s) "
              f"({_mb(job['bytes_written'])}); {job['db']}.{job['table']} now at version "
              f"{job['table_version']}")
    else:
        print(f"job {job['id']} {job['state']}{took_text}"
              + (f": {job['error']}" if job.get("error") else ""))


def _mb(n: Any) -> str:
    return f"{(n or 0) / 1e6:.1f} MB"


def _cmd_transform_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.job is None:
            jobs = client.transform_jobs(db=args.db, table=args.table)
            if args.json:
                return _print_json(jobs)
            if not jobs:
                print("no transformation jobs")
                return 0
            _print_rows(["JOB", "TABLE", "STATE", "PARTITIONS", "READ", "ROWS", "TRIGGER",
                         "STARTED", "DURATION"],
                        [[j["id"], f"{j['db']}.{j['table']}", j["state"],
                          f"{j['partitions_done']}/{j['partitions_total']}", _mb(j["bytes_read"]),
                          j["rows_written"], j["trigger"], _time(j.get("started_at")),
                          _seconds(j.get("duration_s"))] for j in jobs])
            return 0
        job = client.transform_job(args.job)
    if args.json:
        return _print_json(job)
    _print_rows([], [
        ["job", job["id"]], ["table", f"{job['db']}.{job['table']}"], ["state", job["state"]],
        ["trigger", job["trigger"]], ["definition", job["definition"]],
        ["executor", job["executor"]], ["error", job.get("error")],
        ["created", _time(job.get("created_at"))], ["started", _time(job.get("started_at"))],
        ["finished", _time(job.get("finished_at"))], ["duration", _seconds(job.get("duration_s"))],
        ["read", f"{_mb(job['bytes_read'])} of {_mb(job['bytes_total'])}, "
                 f"{job['rows_read']:,} rows"],
        ["written", f"{_mb(job['bytes_written'])}, {job['rows_written']:,} rows, "
                    f"{job['files_written']} file(s)"],
        ["table version", job.get("table_version")]])
    # Jobs with unparseable=side-file: the rows also written to side files, per partition.
    side = any(t.get("unparseable_rows") is not None for t in job["partitions"])
    print("\npartitions:")
    _print_rows(["PARTITION", "STATE", "READ", "ROWS", "WRITTEN", "FILES", "VERSION"]
                + (["UNPARSEABLE"] if side else []) + ["ERROR"],
                [[t["partition"] or "(table)", t["state"],
                  f"{_mb(t['bytes_read'])}/{_mb(t['bytes_total'])}", t["rows_written"],
                  _mb(t["bytes_written"]), t["files_written"], t.get("layout_version")]
                 + ([t.get("unparseable_rows")] if side else []) + [t.get("error")]
                 for t in job["partitions"]], indent="  ")
    return 0


def _seconds(value: Any) -> str | None:
    return f"{value:.1f} s" if isinstance(value, (int, float)) else None


def _cmd_transform_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel_transform(args.job)
    if args.json:
        return _print_json(job)
    print(f"job {job['id']}: cancel requested ({job['state']})")
    return 0


# -- fs ------------------------------------------------------------------------------------------


def _cmd_fs_mount(args: argparse.Namespace) -> int:
    with _client(args) as client:
        m = client.mount(args.path, args.ufs_uri, dict(args.option))
    if args.json:
        return _print_json(m)
    print(f"mounted {m['ufs_uri']} at {m['path']}" + (" (read-only)" if m["readonly"] else ""))
    return 0


def _cmd_fs_unmount(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.unmount(args.path)
    if args.json:
        return _print_json({"unmounted": args.path})
    print(f"unmounted {args.path}")
    return 0


def _cmd_fs_mounts(args: argparse.Namespace) -> int:
    with _client(args) as client:
        mounts = client.mounts()
    if args.json:
        return _print_json(mounts)
    _print_rows(["PATH", "UFS", "MODE", "OPTIONS"],
                [[m["path"], m["ufs_uri"], "ro" if m["readonly"] else "rw",
                  ", ".join(f"{k}={v}" for k, v in sorted(m["options"].items())) or None]
                 for m in mounts])
    return 0


def _cmd_fs_ls(args: argparse.Namespace) -> int:
    with _client(args) as client:
        entries = client.fs_ls(args.path)
    if args.json:
        return _print_json(entries)
    _print_rows(["TYPE", "SIZE", "MODIFIED", "NAME"], [_entry_row(e) for e in entries])
    return 0


def _cmd_fs_stat(args: argparse.Namespace) -> int:
    with _client(args) as client:
        e = client.fs_stat(args.path)
    if args.json:
        return _print_json(e)
    _print_rows([], [["path", e["path"]], ["type", _entry_row(e)[0]], ["size", e["size"]],
                     ["modified", _entry_row(e)[2]], ["under storage", e.get("ufs_uri")]])
    return 0


def _cmd_fs_cat(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for chunk in client.fs_cat(args.path):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    return 0


def _cmd_fs_cache(args: argparse.Namespace) -> int:
    ttl = args.cache_action == "ttl"
    with _client(args) as client:
        done = client.cache_action(args.cache_action, args.path,
                                   seconds=args.seconds if ttl else None,
                                   ttl_action=args.ttl_action if ttl else None)
    if args.json:
        return _print_json(done)
    what = {"pin": "pinned", "unpin": "unpinned", "free": "freed", "load": "loaded",
            "persist": "persisted", "set-ttl": "TTL set on"}.get(done["action"], done["action"])
    detail = []
    if done.get("blocks") is not None:
        detail.append(f"{done['blocks']} cached block(s)")
    if done.get("bytes") is not None:
        detail.append(_size(done["bytes"]))
    if done.get("files") is not None:
        detail.append(f"{done['files']} file(s)")
    if ttl:
        detail.append(f"{args.ttl_action} after {args.seconds:g}s")
    print(f"{what} {done['path']}" + (f" ({', '.join(detail)})" if detail else ""))
    return 0


def _cmd_cache_report(args: argparse.Namespace) -> int:
    with _client(args) as client:
        report = client.cache_report()
    if args.json:
        return _print_json(report)
    rows: list[list[Any]] = []
    for t in report["tiers"]:
        rows.append([t["alias"], "", *_usage(t)])
        rows += [["", d["path"], *_usage(d)] for d in t["dirs"]]
    rows.append(["total", "", *_usage(report)])
    _print_rows(["TIER", "DIRECTORY", "CAPACITY", "USED", "USE%", "BLOCKS", "PINNED", "HIT RATIO"],
                rows)
    return 0


def _usage(u: dict[str, Any]) -> list[Any]:
    cap, used = u["capacity_bytes"], u["used_bytes"]
    ratio = u.get("hit_ratio")
    return [_size(cap), _size(used), f"{100 * used / cap:.0f}%" if cap else None, u["blocks"],
            _size(u["pinned_bytes"]), None if ratio is None else f"{100 * ratio:.1f}%"]


def _size(n: int) -> str:
    """Bytes in 1024-based units: 512 B, 1.5 KiB, 64.0 MiB, 2.0 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _entry_row(e: dict[str, Any]) -> list[Any]:
    kind = "mount" if e.get("mount_point") else "dir" if e["is_dir"] else "file"
    modified = (datetime.fromtimestamp(e["mtime_ns"] / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                if e.get("mtime_ns") else None)
    return [kind, None if e["is_dir"] else e["size"], modified,
            e["name"] + ("/" if e["is_dir"] else "")]


def _ls_databases(args: argparse.Namespace, dbs: list[dict[str, Any]]) -> int:
    if args.json:
        return _print_json(dbs)
    if not dbs:
        print("no databases attached")
        return 0
    rows = []
    for d in dbs:
        last = d.get("last_sync") or {}
        status = "-" if not last else (f"{len(last['errors'])} error(s)" if last.get("errors")
                                       else "ok")
        rows.append([d["name"], d["udb_type"], d["uri"], d["source_db"], d["table_count"],
                     _time(d["attached_at"]), _time(d.get("last_sync_at")), status])
    _print_rows(["NAME", "TYPE", "URI", "SOURCE DB", "TABLES", "ATTACHED", "LAST SYNC", "STATUS"],
                rows)
    return 0


def _ls_tables(args: argparse.Namespace, tables: list[dict[str, Any]]) -> int:
    if args.json:
        return _print_json(tables)
    if not tables:
        print(f"no tables in '{args.db}'")
        return 0
    _print_rows(["NAME", "TYPE", "PARTITIONS", "VERSION", "BYPASS", "LOCATION"],
                [[t["name"], t["type"], t["partition_count"], t["version"], _yes(t["bypass"]),
                  t.get("location")] for t in tables])
    return 0


def _show_table(t: dict[str, Any], page: dict[str, Any] | None) -> None:
    sd = t.get("sd") or {}
    serde = (sd.get("serde") or {}).get("serialization_lib")
    _print_rows([], [
        ["table", f"{t['db_name']}.{t['name']}"], ["type", t["table_type"]],
        ["location", t.get("location")], ["input format", sd.get("input_format")],
        ["serde", serde], ["version", t["version"]], ["partitions", t["partition_count"]],
        ["layout", _layout(t["layout"])], ["bypass", _yes(t["bypass"])],
        ["fingerprint", t.get("fingerprint")]])
    print("\ncolumns:")
    _print_rows(["NAME", "TYPE", "COMMENT"],
                [[c["name"], c["type"], c.get("comment")] for c in sd.get("columns", [])],
                indent="  ")
    if t.get("partition_keys"):
        print("\npartition keys:")
        _print_rows(["NAME", "TYPE"], [[c["name"], c["type"]] for c in t["partition_keys"]],
                    indent="  ")
    if t.get("view_original_text"):
        print(f"\nview:\n  {t['view_original_text']}")
    if page is not None:
        shown = len(page["partitions"])
        print(f"\npartitions ({shown} of {page['total']}"
              + (", first shown" if shown < page["total"] else "") + "):")
        _print_rows(["NAME", "LAYOUT", "VERSION", "STALE", "LOCATION"],
                    [[p["name"], p.get("layout", "source"), p.get("layout_version"),
                      _yes(p.get("stale")), (p.get("sd") or {}).get("location")]
                     for p in page["partitions"]], indent="  ")


# -- formatting ----------------------------------------------------------------------------------


def _print_json(value: Any) -> int:
    print(json.dumps(value, indent=2, sort_keys=False))
    return 0


def _print_rows(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> None:
    """Columns aligned on the widest cell; ``None`` shows as ``-``."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    table = ([list(headers)] if headers else []) + cells
    if not table:
        return
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(table[0]))]
    for row in table:
        print(indent + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _layout(layout: Any) -> str:
    if not isinstance(layout, dict):
        return str(layout)
    kind = str(layout.get("kind"))
    if layout.get("version") is not None:
        return f"{kind} v{layout['version']}"
    if layout.get("transformed_partitions"):
        return f"{kind} ({layout['transformed_partitions']} partitions transformed)"
    return kind


def _counts(c: dict[str, int]) -> str:
    return (f"{c['added']} added, {c['updated']} updated, {c['removed']} removed, "
            f"{c['unchanged']} unchanged")


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _time(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%SZ")
    except ValueError:
        return value


if __name__ == "__main__":
    sys.exit(main())
