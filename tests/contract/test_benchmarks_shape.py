"""CONTRACT §8: each benchmark in tests/benchmarks prints JSON lines with exactly
{"name", "value", "unit", "baseline", "ratio"}. Checked statically (the benchmarks take minutes)."""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "tests" / "benchmarks"
KEYS = {"name", "value", "unit", "baseline", "ratio"}


def benchmark_files() -> list[Path]:
    """The committed benchmark modules (scratch profiling files in a working tree are not benchmarks)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "tests/benchmarks"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        files = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        files = list(BENCH_DIR.glob("*.py"))
    return sorted(p for p in files if p.name.startswith("test_") and p.suffix == ".py")


def prints(tree: ast.AST) -> list[ast.Call]:
    """Every print() except diagnostics a developer opts into with BENCH_PROFILE (never on in `make bench`)."""
    found: list[ast.Call] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "BENCH_PROFILE" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_there_are_benchmarks():
    assert len(benchmark_files()) >= 3


@pytest.mark.parametrize("path", benchmark_files(), ids=lambda p: p.name)
def test_every_print_is_one_json_object_with_exactly_the_contract_keys(path):
    tree = ast.parse(path.read_text())
    calls = prints(tree)

    assert calls, f"{path.name} prints no result line"
    for call in calls:
        (arg,) = call.args
        assert isinstance(arg, ast.Call) and ast.unparse(arg.func) == "json.dumps", ast.unparse(call)
        literal = arg.args[0]
        assert isinstance(literal, ast.Dict), ast.unparse(call)
        assert {k.value for k in literal.keys} == KEYS, ast.unparse(call)


@pytest.mark.parametrize("path", benchmark_files(), ids=lambda p: p.name)
def test_every_benchmark_is_marked_bench(path):
    module = importlib.import_module(f"tests.benchmarks.{path.stem}")
    marks = getattr(module, "pytestmark", [])
    marks = marks if isinstance(marks, list) else [marks]
    tests = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
    assert tests
    for fn in tests:
        names = {m.name for m in marks} | {m.name for m in getattr(fn, "pytestmark", [])}
        assert "bench" in names, f"{path.name}::{fn.__name__} runs with the normal suite"


@pytest.mark.parametrize("path", benchmark_files(), ids=lambda p: p.name)
def test_the_line_printer_writes_one_parseable_json_line(path):
    module = importlib.import_module(f"tests.benchmarks.{path.stem}")
    printer = getattr(module, "emit", None) or getattr(module, "report", None)
    assert printer is not None, f"{path.name} has no emit()/report() helper"
    out = io.StringIO()
    args = ("x", 2.0, "s", 1.0, 2.0) if printer.__code__.co_argcount == 5 else ("x", 2.0, 1.0)

    with contextlib.redirect_stdout(out):
        printer(*args)

    (line,) = out.getvalue().splitlines()
    data = json.loads(line)
    assert set(data) == KEYS and data["ratio"] == 2.0
