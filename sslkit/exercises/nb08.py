"""Exercises of notebook 08 (your own data, and sweeps)."""

from __future__ import annotations

import copy
import itertools

from . import Exercise, Hint, Mistake, register


# ---------------------------------------------------------------------------------------------
# The runs of a sweep: every combination of a grid of values


def grid_runs_reference(grid):
    """``sslkit.sweep.grid_runs``: every combination, the last name varying fastest, names in the grid's order."""
    from sslkit.sweep import grid_runs

    return grid_runs(grid)


GRIDS = [
    {"METHOD": ["simclr", "byol"], "NUM_EPOCHS": [2, 8]},
    {"WIDTH": [8, 16], "BATCH_SIZE": [64, 128, 256], "LR": [1e-3, 3e-3]},  # names not in alphabetical order
    {"TEMPERATURE": [0.1, 0.2, 0.5]},
    {"METHOD": ["simclr", "moco"], "SEED": (0, 1, 2)},  # a tuple of values
    {"METHOD": "simclr", "LR": [1e-3, 1e-2]},  # a single value, not in a list
    {"SEED": 3, "TEMPERATURE": [0.1, 0.2], "WIDTH": [8]},
]


def _items(runs):
    return [list(r.items()) for r in runs]


def _key(run):
    return tuple(sorted((k, repr(v)) for k, v in run.items()))


def _grid_test(answer):
    for grid in GRIDS:
        want = grid_runs_reference(grid)
        scalar = [k for k, v in grid.items() if not isinstance(v, (list, tuple))]
        try:
            got = answer(copy.deepcopy(grid))
        except TypeError as e:
            if scalar:
                raise Hint(f"{scalar[0]}={grid[scalar[0]]!r} is a single value, not in a list, and your function "
                           f"raised TypeError ({e}): treat a value that is not a list or tuple as a list of one "
                           f"value") from None
            raise
        if not isinstance(got, list) or not all(isinstance(r, dict) for r in got):
            raise Hint(f"return a list of dicts, one {{name: value}} per run, not {type(got).__name__}"
                       + (f" of {type(got[0]).__name__}" if isinstance(got, (list, tuple)) and got else "")
                       + " (wrap itertools.product's tuples with dict(zip(names, values)))")
        if _items(got) == _items(want):
            continue
        if len(got) > 1 and len({id(r) for r in got}) < len(got):
            raise Hint("your runs are the same dict object, changed in place for each run, so every entry ends as "
                       "the last combination: make a new dict for each run")
        if scalar and any(isinstance(r.get(scalar[0]), str) and len(r[scalar[0]]) == 1 for r in got):
            raise Hint(f"{scalar[0]}={grid[scalar[0]]!r} is a single value, not in a list: your runs iterate over "
                       f"its letters. Treat a value that is not a list or tuple as a list of one value")
        values = [v if isinstance(v, (list, tuple)) else [v] for v in grid.values()]
        zipped = [dict(zip(grid, combo)) for combo in zip(*values)]
        if _items(got) == _items(zipped):
            raise Hint(f"for {grid} you return {len(got)} runs, the grid has {len(want)}: zip pairs the first values "
                       f"together, then the second ones; a grid is every combination (itertools.product)")
        if len(got) != len(want) or sorted(map(_key, got)) != sorted(map(_key, want)):
            raise Hint(f"for {grid} your runs are {got}; the grid's are every combination of the values, "
                       f"{len(want)} runs")
        if any(list(r) != list(grid) for r in got):
            raise Hint(f"the names in your runs are in the order {list(got[0])}, not the grid's order "
                       f"{list(grid)}: keep it (list(grid)). The order of the runs follows it, and run_name(run) "
                       f"builds each run's file name from it: another order names the files differently and finds "
                       f"no earlier run to resume")
        first_fastest = [dict(zip(grid, reversed(combo))) for combo in itertools.product(*reversed(values))]
        if [_key(r) for r in got] == [_key(r) for r in first_fastest]:
            raise Hint("the runs are right but in another order: the first name varies fastest in yours; the "
                       "sweep's order is that of nested loops with the first name outermost (the last one varies "
                       "fastest, as itertools.product(*values) gives them)")
        raise Hint("the runs are right but in another order: the last name must vary fastest, as "
                   "itertools.product(*values) gives them")


def _grid_zip(grid):
    values = [v if isinstance(v, (list, tuple)) else [v] for v in grid.values()]
    return [dict(zip(grid, combo)) for combo in zip(*values)]


def _grid_sorted_names(grid):
    names = sorted(grid)
    values = [grid[k] if isinstance(grid[k], (list, tuple)) else [grid[k]] for k in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _grid_first_fastest(grid):
    names = list(grid)[::-1]
    values = [grid[k] if isinstance(grid[k], (list, tuple)) else [grid[k]] for k in names]
    return [{k: run[k] for k in grid} for run in (dict(zip(names, combo)) for combo in itertools.product(*values))]


def _grid_no_wrap(grid):
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def _grid_shared_dict(grid):
    runs, run = [{}], {}
    for name, values in grid.items():
        values = values if isinstance(values, (list, tuple)) else [values]
        grown = []
        for partial in runs:
            for value in values:
                run.update(partial)  # one dict for every run
                run[name] = value
                grown.append(run)
        runs = grown
    return runs


register(Exercise(
    name="sweep_grid", notebook="08_your_data", answer_name="my_grid_runs", difficulty=2,
    idea="the runs of a sweep: every combination of the grid's values, in the sweep's order",
    test=_grid_test, reference=grid_runs_reference,
    mistakes=(
        Mistake("zip instead of the product", _grid_zip, "itertools.product"),
        Mistake("the names sorted: the grid's order lost", _grid_sorted_names, "grid's order"),
        Mistake("the first name varying fastest", _grid_first_fastest, "first name varies fastest"),
        Mistake("a single value iterated over (its letters)", _grid_no_wrap, "a single value"),
        Mistake("one dict changed in place for every run", _grid_shared_dict, "same dict object"),
    ),
))


# ---------------------------------------------------------------------------------------------
# Reading the sweep's table: the best runs for a metric


def best_runs_reference(rows, metric, lower_is_better=False):
    """The rows of ``sslkit.sweep.collect``'s table with the best value of ``metric`` (every one of them when
    several tie), in the table's order; rows without the metric (None, or missing) are skipped; [] when no row
    has it. The table is left as it is."""
    values = [r.get(metric) for r in rows if r.get(metric) is not None]
    if not values:
        return []
    best = min(values) if lower_is_better else max(values)
    return [r for r in rows if r.get(metric) is not None and r.get(metric) == best]


def _table():
    """A table as ``collect`` gives it: swept parameters as strings (from the file names), then numbers."""
    return [
        {"METHOD": "byol", "NUM_EPOCHS": "2", "wall_time_s": 21.4, "knn": 0.112, "linear": 0.119},
        {"METHOD": "byol", "NUM_EPOCHS": "8", "wall_time_s": 52.0, "knn": 0.107, "linear": 0.113},
        {"METHOD": "simclr", "NUM_EPOCHS": "2", "wall_time_s": 19.8, "knn": 0.135, "linear": 0.163},
        {"METHOD": "simclr", "NUM_EPOCHS": "8", "wall_time_s": 50.3, "knn": 0.251, "linear": 0.308},
    ]


def _names(rows):
    return [f"{r.get('METHOD')},{r.get('NUM_EPOCHS')}" for r in rows]


def _best_call(answer, rows, metric, lower):
    before = copy.deepcopy(rows)
    try:
        got = answer(rows, metric, lower)
    except TypeError as e:
        if any(r.get(metric) is None for r in rows):
            raise Hint(f"a row whose {metric} is None (a run that did not record it) cannot be compared with "
                       f"numbers, and your function raised TypeError ({e}): skip those rows") from None
        raise
    if rows != before:
        raise Hint("your function changed the table (rows.sort sorts it in place, and the caller's table with it): "
                   "leave rows as they are; use max()/min() or sorted(), which return new objects")
    if not isinstance(got, list):
        raise Hint(f"return a list of rows (dicts of the table), not {type(got).__name__}; [] when no row has the "
                   f"metric")
    others = [r for r in got if not isinstance(r, dict)]
    if others:
        raise Hint(f"return the rows (dicts), not {type(others[0]).__name__}: the list holds the best rows "
                   f"themselves, as they are in the table, so that the caller reads each run's parameters and "
                   f"metrics from them (e.g. [r for r in rows if ...])")
    return got


def _best_test(answer):
    table = _table()
    for metric, lower in (("knn", False), ("linear", False), ("wall_time_s", True)):
        want = best_runs_reference(table, metric, lower)
        got = _best_call(answer, table, metric, lower)
        if got == want:
            continue
        if lower and got == best_runs_reference(table, metric, not lower):
            raise Hint(f"for {metric} with lower_is_better=True (a wall time, a loss) the best run has the smallest "
                       f"value; yours has the largest")
        raise Hint(f"for {metric} (lower_is_better={lower}) the best run is {_names(want)}, yours {_names(got)}")
    # ties: accuracies on a few hundred test images often are equal
    tied = _table()
    tied[0]["knn"] = tied[3]["knn"]
    want = best_runs_reference(tied, "knn")
    got = _best_call(answer, tied, "knn", False)
    if got != want:
        if len(got) == 1 and got[0] in want:
            raise Hint(f"two runs tie for the best knn ({_names(want)}): return every row with the best value, in "
                       f"the table's order, not only one of them")
        raise Hint(f"with a tie for the best knn the answer is {_names(want)} (every tied row, in the table's "
                   f"order); yours is {_names(got)}")
    # a run that did not record the metric (it failed, or the metric is not in its results file)
    missing = _table()
    missing[0]["knn"] = None
    del missing[1]["wall_time_s"]
    for metric, lower in (("knn", False), ("knn", True), ("wall_time_s", True)):
        want = best_runs_reference(missing, metric, lower)
        try:
            got = _best_call(answer, missing, metric, lower)
        except KeyError as e:
            raise Hint(f"a row without the key {e} (its run did not record {metric}) made your function fail: read "
                       f"it with row.get(metric) and skip rows where it is None") from None
        if got != want:
            if any(r.get(metric) is None for r in got):
                raise Hint(f"you returned a row whose {metric} is None: skip such rows (a missing value is not 0, "
                           f"nor the best)")
            raise Hint(f"with a missing {metric} in some rows, the best run is {_names(want)}, yours {_names(got)}")
    nothing = _table()
    for row in nothing:
        row["knn"] = None
    got = _best_call(answer, nothing, "knn", False)
    if got != []:
        raise Hint(f"when no row has the metric, return [] (no best run); yours returned {_names(got)}")
    if _best_call(answer, [], "knn", False) != []:
        raise Hint("for an empty table return []")


def _best_max_only(rows, metric, lower_is_better=False):
    values = [r[metric] for r in rows if r.get(metric) is not None]
    if not values:
        return []
    return [r for r in rows if r.get(metric) is not None and r[metric] == max(values)]


def _best_first_only(rows, metric, lower_is_better=False):
    kept = [r for r in rows if r.get(metric) is not None]
    if not kept:
        return []
    pick = min if lower_is_better else max
    return [pick(kept, key=lambda r: r[metric])]


def _best_no_skip(rows, metric, lower_is_better=False):
    if not rows:
        return []
    pick = min if lower_is_better else max
    best = pick(rows, key=lambda r: r.get(metric))[metric]
    return [r for r in rows if r.get(metric) == best]


def _best_none_as_zero(rows, metric, lower_is_better=False):
    values = [r.get(metric) or 0.0 for r in rows]
    if not values or not any(r.get(metric) is not None for r in rows):
        return []
    best = min(values) if lower_is_better else max(values)
    return [r for r, v in zip(rows, values) if v == best]


def _best_sorted_in_place(rows, metric, lower_is_better=False):
    rows.sort(key=lambda r: (r.get(metric) is None, r.get(metric) if lower_is_better else -(r.get(metric) or 0)))
    kept = [r for r in rows if r.get(metric) is not None]
    return [r for r in kept if r[metric] == kept[0][metric]] if kept else []


def _best_indices(rows, metric, lower_is_better=False):
    """The positions of the best rows in the table, not the rows."""
    best = best_runs_reference(rows, metric, lower_is_better)
    return [i for i, r in enumerate(rows) if any(r is b for b in best)]


register(Exercise(
    name="best_runs", notebook="08_your_data", answer_name="my_best_runs", difficulty=1,
    idea="reading a sweep's table: the runs with the best value of a metric (all of them on a tie), higher or lower "
         "being better, skipping runs that did not record it",
    test=_best_test, reference=best_runs_reference,
    mistakes=(
        Mistake("max for a metric where lower is better", _best_max_only, "smallest value"),
        Mistake("only one of tied runs", _best_first_only, "not only one of them"),
        Mistake("rows without the metric compared (TypeError)", _best_no_skip, "cannot be compared"),
        Mistake("a missing metric counted as 0", _best_none_as_zero, "is none: skip such rows"),
        Mistake("the table sorted in place", _best_sorted_in_place, "changed the table"),
        Mistake("the positions of the best rows instead of the rows", _best_indices,
                "return the rows (dicts), not int"),
    ),
))
