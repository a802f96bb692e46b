"""Leaderboard of eval runs: one row per model, one column per benchmark metric, one overall per suite.

The leaderboard only reads ``results.json`` files (format ``wavalign.eval/1``) and writes three views of the same
table: ``leaderboard.csv`` (values as the runs reported them; empty cell = no result), ``leaderboard.md`` (2
decimals, ``± stderr``, the formula of every overall) and ``leaderboard.png`` (bars of each model's primary metrics
and overalls).

Rules:

- A run folder may hold one run or many (searched recursively). Files that cannot be read or are not
  ``wavalign.eval/1`` are skipped with a warning; when no file is usable it is an error.
- When one model has several runs of one benchmark, the newest wins (``finished_at`` in results.json, else the
  file's modification time) and a warning names the runs left out.
- Incomplete runs (``complete: false``) are shown, and listed in the ``runs_incomplete`` column.
- ``<suite>/overall`` is the mean of the primary metric (0–100 scale) of every member benchmark of the suite. It
  needs every member: a model missing any member, or with no value for one, gets an empty overall. This is
  VoiceBench's formula: the mean of the subset scores, with the 1–5 GPT scores ×20.
- Ranking: by ``sort_by`` if given, else by the first suite overall that some model has, else by the first
  benchmark's primary metric; ascending for lower-is-better metrics; models without a value come last, unranked;
  ties keep model-name order and share a rank.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalsuite.results import write_atomic

RESULTS_JSON = "results.json"
RESULTS_FORMAT = "wavalign.eval/1"
INCOMPLETE_COLUMN = "runs_incomplete"
OVERALL = "overall"


class LeaderboardError(ValueError):
    """A problem the user can fix: no usable results, an unknown sort column, a missing run folder."""


@dataclass(frozen=True)
class Metric:
    """One aggregate of a run, as results.json reports it (already scaled)."""

    value: float | None
    stderr: float | None
    higher_is_better: bool


@dataclass(frozen=True)
class Run:
    """The parts of one results.json the leaderboard uses."""

    path: Path
    model: str
    benchmark: str
    benchmark_version: Any
    suite: str | None
    metrics: dict[str, Metric]  # in results.json order
    primary: str
    complete: bool
    finished: float  # POSIX seconds: finished_at, else the file's mtime


@dataclass(frozen=True)
class Column:
    """A leaderboard column: ``<benchmark>/<metric>`` or ``<suite>/overall``."""

    name: str
    higher_is_better: bool
    formula: str | None = None  # overalls only


@dataclass
class Leaderboard:
    """The table as written: ``rows`` are in rank order, each maps column name → value (None = empty cell)."""

    columns: list[Column]  # between "rank, model" and "runs_incomplete"
    rows: list[dict[str, Any]]
    ranked_by: str
    runs: list[Run]  # the runs the table shows (one per model and benchmark)
    chart_columns: list[str]  # the overalls, then each benchmark's primary metric
    stderr: dict[str, dict[str, float | None]]  # model → column → stderr as reported
    warnings: list[str] = field(default_factory=list)
    csv_path: Path | None = None
    md_path: Path | None = None
    png_path: Path | None = None

    @property
    def header(self) -> list[str]:
        return ["rank", "model", *(c.name for c in self.columns), INCOMPLETE_COLUMN]


def build_leaderboard(
    run_dirs: Sequence[Path],
    out_csv: Path,
    *,
    suites: Mapping[str, Sequence[str]] | None = None,
    sort_by: str | None = None,
) -> Leaderboard:
    """Read every results.json under ``run_dirs`` and write ``out_csv`` plus the .md and .png beside it.

    Args:
        run_dirs: run folders, folders of runs (searched recursively) or results.json files.
        out_csv: the CSV path; the Markdown and PNG get the same name with ``.md`` and ``.png``.
        suites: suite name → member benchmark names (from the benchmark definitions). Default: each results'
            ``benchmark.suite``, with the members that appear in the results. Suites with no member in the results
            are left out.
        sort_by: a column name to rank by (``<benchmark>/<metric>`` or ``<suite>/overall``).

    Raises:
        LeaderboardError: a run folder does not exist, no usable results.json, or an unknown ``sort_by``.
    """
    warnings: list[str] = []
    runs = load_runs(run_dirs, warnings)
    runs = newest_runs(runs, warnings)
    board = make_table(runs, suites=suites, sort_by=sort_by, warnings=warnings)

    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    board.csv_path = out_csv
    write_csv(board, out_csv)
    board.md_path = out_csv.with_suffix(".md")
    write_markdown(board, board.md_path)
    try:
        board.png_path = out_csv.with_suffix(".png")
        write_png(board, board.png_path)
    except ImportError:
        board.png_path = None
        warnings.append("leaderboard.png not written: matplotlib is not installed (pip install matplotlib)")
    return board


# --- reading -----------------------------------------------------------------------------------------------------


def find_results(run_dirs: Iterable[Path], warnings: list[str]) -> list[Path]:
    """The results.json files under each path, in sorted order, without duplicates."""
    found: list[Path] = []
    for given in run_dirs:
        path = Path(given)
        if path.is_file():
            hits = [path]
        elif path.is_dir():
            hits = sorted(path.rglob(RESULTS_JSON))
            if not hits:
                warnings.append(f"{path}: no {RESULTS_JSON} found")
        else:
            raise LeaderboardError(f"{path}: no such file or folder")
        for hit in hits:
            if hit.resolve() not in {f.resolve() for f in found}:
                found.append(hit)
    return found


def load_runs(run_dirs: Iterable[Path], warnings: list[str]) -> list[Run]:
    """Every readable run; unreadable files become warnings. Raises LeaderboardError when none is usable."""
    paths = find_results(run_dirs, warnings)
    runs = []
    for path in paths:
        try:
            runs.append(read_run(path))
        except LeaderboardError as e:
            warnings.append(f"skipped {e}")
    if not runs:
        detail = "; ".join(warnings) if warnings else "no paths given"
        raise LeaderboardError(f"no usable {RESULTS_JSON} ({detail})")
    return runs


def read_run(path: Path) -> Run:
    """Parse one results.json. Raises LeaderboardError naming the file and what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise LeaderboardError(f"{path}: cannot read ({e})") from e
    except ValueError as e:
        raise LeaderboardError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise LeaderboardError(f"{path}: format is {found!r}, expected {RESULTS_FORMAT!r}")

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise LeaderboardError(f"{path}: {what}")

    benchmark, model, raw_metrics = data.get("benchmark"), data.get("model"), data.get("metrics")
    need(isinstance(benchmark, dict) and _nonempty_str(benchmark.get("name")), "benchmark.name missing")
    need(isinstance(model, dict) and _nonempty_str(model.get("name")), "model.name missing")
    need(isinstance(raw_metrics, dict) and bool(raw_metrics), "metrics missing or empty")
    need(data.get("primary") in raw_metrics, f"primary {data.get('primary')!r} is not one of the metrics")
    need(isinstance(data.get("complete"), bool), "complete must be true or false")
    suite = benchmark.get("suite")
    need(suite is None or _nonempty_str(suite), "benchmark.suite must be a name or null")

    metrics = {}
    for name, m in raw_metrics.items():
        need(isinstance(m, dict), f"metrics.{name} is not an object")
        need(m.get("value") is None or _is_number(m.get("value")), f"metrics.{name}.value is not a number or null")
        need(m.get("stderr") is None or _is_number(m.get("stderr")), f"metrics.{name}.stderr is not a number or null")
        need(isinstance(m.get("higher_is_better"), bool), f"metrics.{name}.higher_is_better must be true or false")
        metrics[name] = Metric(_finite(m.get("value")), _finite(m.get("stderr")), m["higher_is_better"])

    return Run(
        path=path,
        model=model["name"],
        benchmark=benchmark["name"],
        benchmark_version=benchmark.get("version"),
        suite=suite,
        metrics=metrics,
        primary=data["primary"],
        complete=data["complete"],
        finished=_finished(data.get("finished_at"), path),
    )


def _nonempty_str(x: Any) -> bool:
    return isinstance(x, str) and bool(x.strip())


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _finished(stamp: Any, path: Path) -> float:
    """finished_at (ISO 8601; naive means UTC) as POSIX seconds, else the file's modification time."""
    if isinstance(stamp, str):
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return when.timestamp()
    return os.stat(path).st_mtime


def newest_runs(runs: Sequence[Run], warnings: list[str]) -> list[Run]:
    """One run per (model, benchmark): the newest; each choice among several is recorded in ``warnings``."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.model, run.benchmark), []).append(run)
    kept = []
    for (model, benchmark), group in groups.items():
        # max() keeps the first of equal keys; the path breaks ties between equal timestamps deterministically
        newest = max(group, key=lambda r: (r.finished, str(r.path)))
        kept.append(newest)
        if len(group) > 1:
            others = ", ".join(str(r.path) for r in group if r is not newest)
            warnings.append(f"model {model!r}, benchmark {benchmark!r}: {len(group)} runs; using the newest, "
                            f"{newest.path} (finished {_iso(newest.finished)}), not {others}")
    return kept


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


# --- the table ---------------------------------------------------------------------------------------------------


def make_table(
    runs: Sequence[Run],
    *,
    suites: Mapping[str, Sequence[str]] | None = None,
    sort_by: str | None = None,
    warnings: list[str] | None = None,
) -> Leaderboard:
    """The ranked table of runs that are already one per (model, benchmark)."""
    warnings = [] if warnings is None else warnings
    by_benchmark: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.benchmark, r.finished)):
        by_benchmark.setdefault(run.benchmark, []).append(run)
    for name, group in by_benchmark.items():
        versions = sorted({str(r.benchmark_version) for r in group})
        if len(versions) > 1:
            warnings.append(f"benchmark {name!r}: runs of versions {', '.join(versions)}; scores may not compare")

    suite_members = _suites(runs, suites)
    suite_members = {s: list(m) for s, m in suite_members.items() if any(b in by_benchmark for b in m)}

    # Benchmark order: suite members as the suites list them, then the other benchmarks by name.
    order: list[str] = []
    for members in suite_members.values():
        order += [b for b in members if b in by_benchmark and b not in order]
    order += sorted(b for b in by_benchmark if b not in order)

    primary: dict[str, str] = {}
    columns: list[Column] = []
    for suite, members in suite_members.items():
        formula = (f"{suite}/{OVERALL} = mean of the primary metric (0–100) of {', '.join(members)}; "
                   "empty unless the model has all of them")
        columns.append(Column(f"{suite}/{OVERALL}", True, formula))
    for bench in order:
        group = by_benchmark[bench]
        newest = group[-1]
        primary[bench] = newest.primary
        names = [newest.primary]
        for run in group:
            names += [m for m in run.metrics if m not in names]
        for metric in names:
            hib = next(r.metrics[metric].higher_is_better for r in reversed(group) if metric in r.metrics)
            columns.append(Column(f"{bench}/{metric}", hib))

    cells: dict[str, dict[str, Any]] = {}
    stderrs: dict[str, dict[str, float | None]] = {}
    incomplete: dict[str, list[str]] = {}
    for run in runs:
        row = cells.setdefault(run.model, {})
        errs = stderrs.setdefault(run.model, {})
        for metric, m in run.metrics.items():
            row[f"{run.benchmark}/{metric}"] = m.value
            errs[f"{run.benchmark}/{metric}"] = m.stderr
        if not run.complete:
            incomplete.setdefault(run.model, []).append(run.benchmark)

    for suite, members in suite_members.items():
        lower = [b for b in members if b in by_benchmark and not _primary_metric(by_benchmark[b]).higher_is_better]
        if lower:
            warnings.append(f"suite {suite!r}: overall not computed, the primary metric of {', '.join(lower)} "
                            "is lower-is-better")
        missing = [b for b in members if b not in by_benchmark]
        if missing:
            warnings.append(f"suite {suite!r}: no results for {', '.join(missing)}, so no model has an overall")
        for row in cells.values():
            values = [row.get(f"{b}/{primary[b]}") if b in primary else None for b in members]
            ok = not lower and all(v is not None for v in values)
            row[f"{suite}/{OVERALL}"] = round(sum(values) / len(values), 4) if ok else None
        for bench in members:
            for run in by_benchmark.get(bench, []):
                value = run.metrics[run.primary].value
                if value is not None and not 0 <= value <= 100:
                    warnings.append(f"suite {suite!r}: {run.model} {bench}/{run.primary} = {value} is outside 0–100")

    names = [c.name for c in columns]
    if sort_by is None:
        # the first suite overall some model has, else the first benchmark's primary metric
        overalls = [c for c in columns if c.formula and any(r.get(c.name) is not None for r in cells.values())]
        key = overalls[0] if overalls else next(c for c in columns if not c.formula)
    elif sort_by in names:
        key = columns[names.index(sort_by)]
    else:
        close = difflib.get_close_matches(sort_by, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; columns: {', '.join(names)}"
        raise LeaderboardError(f"cannot sort by {sort_by!r}: no such column{hint}")

    def rank_key(model: str) -> tuple[bool, float]:
        value = cells[model].get(key.name)
        if value is None:
            return (True, 0.0)
        return (False, -value if key.higher_is_better else value)

    rows = []
    previous: tuple[bool, float] | None = None
    for position, model in enumerate(sorted(sorted(cells), key=rank_key), start=1):
        k = rank_key(model)
        if k[0]:
            rank = None
        elif previous is not None and k == previous:
            rank = rows[-1]["rank"]
        else:
            rank = position
        previous = k
        row = {"rank": rank, "model": model}
        row.update({c.name: cells[model].get(c.name) for c in columns})
        row[INCOMPLETE_COLUMN] = ";".join(sorted(incomplete.get(model, []))) or None
        rows.append(row)

    return Leaderboard(
        columns=columns,
        rows=rows,
        ranked_by=key.name,
        runs=sorted(runs, key=lambda r: (r.model, order.index(r.benchmark))),
        chart_columns=[c.name for c in columns if c.formula] + [f"{b}/{primary[b]}" for b in order],
        stderr=stderrs,
        warnings=warnings,
    )


def _primary_metric(group: Sequence[Run]) -> Metric:
    newest = group[-1]
    return newest.metrics[newest.primary]


def _suites(runs: Sequence[Run], given: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    if given is not None:
        return {suite: list(members) for suite, members in given.items()}
    derived: dict[str, list[str]] = {}
    for run in runs:
        if run.suite and run.benchmark not in derived.setdefault(run.suite, []):
            derived[run.suite].append(run.benchmark)
    return {suite: sorted(members) for suite, members in sorted(derived.items())}


# --- writing -----------------------------------------------------------------------------------------------------


def write_csv(board: Leaderboard, path: Path) -> None:
    """Values exactly as reported (overalls rounded to 4 decimals); an empty cell is a missing result."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(board.header)
    for row in board.rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in board.header])
    write_atomic(path, buffer.getvalue().encode("utf-8"))


def write_markdown(board: Leaderboard, path: Path) -> None:
    """A Markdown table: 2 decimals, ``± stderr`` where the run reported one, blank where there is no result."""
    by_name = {c.name: c for c in board.columns}
    direction = "higher" if by_name[board.ranked_by].higher_is_better else "lower"
    lines = [
        "# wavalign leaderboard",
        "",
        f"Ranked by `{board.ranked_by}` ({direction} is better). Cells are value ± stderr as each run reported "
        "them; a blank cell means no result. ↑ higher is better, ↓ lower is better.",
        "",
    ]
    lines += [f"- `{c.name}` = {c.formula.split(' = ', 1)[1]}" for c in board.columns if c.formula]
    lines += [f"- `{INCOMPLETE_COLUMN}`: benchmarks whose run did not finish (complete = false); their values are "
              "over the items scored so far", ""]
    header = ["rank", "model", *(f"{c.name} {'↑' if c.higher_is_better else '↓'}" for c in board.columns),
              INCOMPLETE_COLUMN]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("| " + " | ".join(["---:", ":---", *["---:"] * len(board.columns), ":---"]) + " |")
    for row in board.rows:
        cells = ["" if row["rank"] is None else str(row["rank"]), _md_escape(row["model"])]
        for column in board.columns:
            value = row.get(column.name)
            stderr = board.stderr[row["model"]].get(column.name)
            if value is None:
                cells.append("")
            elif stderr is None:
                cells.append(f"{value:.2f}")
            else:
                cells.append(f"{value:.2f} ± {stderr:.2f}")
        cells.append(_md_escape((row[INCOMPLETE_COLUMN] or "").replace(";", ", ")))
        lines.append("| " + " | ".join(cells) + " |")
    write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def write_png(board: Leaderboard, path: Path) -> None:
    """Grouped horizontal bars: one group per model (rank order, top first), one bar per overall/primary metric.

    A missing value is drawn as the label "n/a" instead of a bar. Raises ImportError without matplotlib.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_name = {c.name: c for c in board.columns}
    series = board.chart_columns
    models = [row["model"] for row in board.rows]
    bar = 0.8 / len(series)
    fig = Figure(figsize=(10, 1.2 + len(models) * (0.3 + 0.22 * len(series))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10" if len(series) <= 10 else "tab20"]
    values = [v for row in board.rows for s in series if (v := row.get(s)) is not None]
    span = max([abs(v) for v in values] + [1.0])
    for i, name in enumerate(series):
        label = name if by_name[name].higher_is_better else f"{name} (lower is better)"
        for j, row in enumerate(board.rows):
            y = j + (i - (len(series) - 1) / 2) * bar
            value = row.get(name)
            if value is None:
                ax.text(0, y, " n/a", va="center", ha="left", fontsize=7, color="0.5")
                continue
            ax.barh(y, value, height=bar * 0.9, color=colors(i % colors.N), label=label)
            label = "_nolegend_"  # one legend entry per series
            ax.text(value + span * 0.01, y, f"{value:.1f}", va="center", ha="left", fontsize=7)
        if label != "_nolegend_":  # no model has a value: still list the series
            ax.barh(0, 0, height=0, color=colors(i % colors.N), label=label)
    ticks = [(f"{r['rank']}. " if r["rank"] else "") + r["model"] + (" *" if r[INCOMPLETE_COLUMN] else "")
             for r in board.rows]
    ax.set_yticks(range(len(models)), ticks)
    ax.set_ylim(len(models) - 0.5, -0.5)  # rank 1 on top
    ax.set_xlim(min([0.0, *values]) * 1.1, span * 1.12)
    ax.axvline(0, color="0.3", linewidth=0.8)
    note = "; * = has an incomplete run" if any(r[INCOMPLETE_COLUMN] for r in board.rows) else ""
    ax.set_xlabel(f"score as reported (overalls and primary metrics){note}")
    ax.set_title(f"wavalign leaderboard, ranked by {board.ranked_by}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
