"""Helpers shared by the benchmarks: machine description and the results file."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores, {cpu}, {mem_gib:.0f} GiB, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


EARLIER = "### Earlier results of this section (as they were recorded)"


def record_section(name: str, command: str, body: str) -> None:
    """Put fresh results at the top of the section `name` of docs/benchmarks.md (adding the
    section if need be). What the section held before, generated or written by hand, is
    kept below them, under EARLIER: a new run never erases an earlier figure."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = f"<!-- begin {name} -->\n## {name}\n\n"
    fresh = (f"- command: `{command}`\n- machine: {machine()}\n- date: {stamp}\n\n"
             f"{body.rstrip()}\n")
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmarks\n\nFigures measured on the project's machines; each section says the "
        "command that produced it. Benchmarks are not tests: nothing here is asserted.\n\n")
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->\n## [^\n]*\n\n(.*?)"
                         rf"<!-- end {re.escape(name)} -->\n", re.S)
    found = pattern.search(text)
    if found:
        before = found.group(1).rstrip()
        section = f"{head}{fresh}\n{EARLIER}\n\n{before}\n<!-- end {name} -->\n"
        text = text[:found.start()] + section + text[found.end():]
    else:
        text = text.rstrip() + "\n\n" + f"{head}{fresh}<!-- end {name} -->\n"
    RESULTS.write_text(text)


def parse_run_options(ap, quick: dict):
    """Add --quick (the values of `quick`), --record and --results to `ap`, parse, and apply
    --quick; the parsed args."""
    ap.add_argument("--quick", action="store_true",
                    help="a few seconds in all: " + ", ".join(f"{k}={v}"
                                                              for k, v in quick.items()))
    ap.add_argument("--record", action="store_true",
                    help="write the results into docs/benchmarks.md (or --results)")
    ap.add_argument("--results", default=None, metavar="FILE",
                    help="record into FILE instead of docs/benchmarks.md")
    args = ap.parse_args()
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
    return args


def command_line(script: str, args, names: list[str]) -> str:
    """The command that reproduces a run of benchmarks/SCRIPT: `--quick --record`, or each
    option in `names` with its value (a flag only when set; a list joined by commas; floats
    in their shortest form) and `--record`."""
    if args.quick:
        return f"python benchmarks/{script} --quick --record"

    def text(value) -> str:
        if isinstance(value, (list, tuple)):
            return ",".join(map(text, value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    parts = [f"python benchmarks/{script}"]
    for name in names:
        value = getattr(args, name)
        option = "--" + name.replace("_", "-")
        if value is True:
            parts.append(option)
        elif value is not False and value is not None:
            parts.append(f"{option} {text(value)}")
    return " ".join(parts + ["--record"])


def record_run(args, section: str, command: str, lines: list[str]) -> None:
    """Record `lines` as a fresh run of `section`, in args.results or docs/benchmarks.md."""
    global RESULTS
    if args.results:
        RESULTS = Path(args.results).resolve()
    record_section(section, command, "\n".join(lines))
    print(f"recorded in {RESULTS}")


def run_tables_record(args, prefix: str, run_all, tables, section: str, command) -> None:
    """`run_all(args, directory)` in a temporary directory, print `tables(result, args)`,
    and with --record record them as a fresh run of `section` with `command(args)`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        result = run_all(args, Path(tmp))
    lines = tables(result, args)
    print("\n".join(lines))
    if args.record:
        record_run(args, section, command(args), lines)


def measured(prefix: str, run, args, tables):
    """`run(args, directory)` in a temporary directory, then print `tables(result)` (lines)
    and a sentence on the load average before and after and the time the whole run took;
    (the result, those lines, that sentence)."""
    import tempfile
    from pathlib import Path

    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        result = run(args, Path(tmp))
    took = time.monotonic() - started
    load_after = os.getloadavg()
    load = (f"Load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; the whole "
            f"run took {took:.0f} s (other work shares the {os.cpu_count()} cores).")
    body = tables(result)
    print(f"\n{chr(10).join(body)}\n\n{load}")
    return result, body, load


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run_child(code: str) -> str:
    """Run python code in a fresh interpreter (for memory measurements); return stdout."""
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent).stdout
