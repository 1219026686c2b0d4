"""The package's shape: no import cycle, no huge module, model ids and prediction keys spelled by their
owners only (edgekd/artifacts.py, edgekd/predictions.py). Static checks on the source (``ast``), no
imports of the modules checked."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "edgekd"

# ---- import graph -------------------------------------------------------------------------------

# Edges of import cycles that exist today and are to be removed; any other cycle fails the test, and
# an edge listed here that no longer exists fails it too (delete it from this set then).
# edgekd.config -> edgekd.losses: config imports losses inside functions (loss names and flags to
# validate [distill]); edgekd.losses -> edgekd.config: losses imports DistillConfig for type hints
# only (under `if TYPE_CHECKING:`). Dropping this one edge breaks the only cycle.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = {
    ("edgekd.losses", "edgekd.config"),
}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _in_package(name: str) -> bool:
    return name == "edgekd" or name.startswith("edgekd.")


def imports_of(name: str, path: Path, modules=None) -> set[str]:
    """The edgekd modules ``name`` imports, at module level or inside functions (type-checking-only
    imports included: they are a dependency too), plus ``importlib.import_module`` of a constant
    name (or an f-string with a constant ``edgekd.PKG.`` prefix: every module of PKG)."""
    modules = MODULES if modules is None else modules
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if _in_package(a.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name, path).split(".")
                base = base[:len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
                if not _in_package(base_name):
                    continue
            for a in node.names:  # `from . import x`: the submodule x if there is one
                sub = f"{base_name}.{a.name}"
                out.add(sub if sub in modules else base_name)
        elif (isinstance(node, ast.Call) and node.args
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _in_package(arg.value):
                out.add(arg.value)
            elif (isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant)
                  and str(arg.values[0].value).startswith("edgekd.")):
                prefix = str(arg.values[0].value)
                out.update(m for m in modules if m.startswith(prefix) and "." not in m[len(prefix):])
    out.discard(name)
    return out


def import_graph(modules=None) -> dict[str, set[str]]:
    modules = MODULES if modules is None else modules
    return {m: {d for d in imports_of(m, p, modules) if d in modules} for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative DFS, sorted for a stable
    message)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_module_names_cover_the_package():
    assert "edgekd" in MODULES and "edgekd.gate" in MODULES and "edgekd.commands.export" in MODULES
    assert MODULES["edgekd.gate"] == PKG / "gate" / "__init__.py"


def test_import_resolution(tmp_path):
    """The resolver on a hand-made package: every import form it must see, and what it must ignore."""
    pkg = tmp_path / "edgekd"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "__version__ = '0'\n",
        "a.py": ("from __future__ import annotations\nimport os\nfrom . import b\nfrom .sub import c\n"
                 "from . import __version__\nimport edgekd.sub.d\nfrom edgekd import e\n"
                 "def f():\n    from .sub.c import g\n    import importlib\n"
                 "    importlib.import_module('edgekd.e')\n"
                 "    return [importlib.import_module(f'edgekd.sub.{n}') for n in 'cd']\n"),
        "b.py": "", "e.py": "import numpy\n",
        "sub/__init__.py": "from .c import x\nfrom .. import b\n",
        "sub/c.py": "from ..b import y\nfrom . import d\nfrom .d import z\n",
        "sub/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    graph = import_graph({_module_name(p, tmp_path): p for p in sorted(pkg.rglob("*.py"))})
    assert graph == {
        "edgekd": set(),
        "edgekd.a": {"edgekd", "edgekd.b", "edgekd.sub.c", "edgekd.sub.d", "edgekd.e"},
        "edgekd.b": set(), "edgekd.e": set(),
        "edgekd.sub": {"edgekd.sub.c", "edgekd.b"},
        "edgekd.sub.c": {"edgekd.b", "edgekd.sub.d"},
        "edgekd.sub.d": {"edgekd.a"},
    }
    assert find_cycle(graph) == ["edgekd.a", "edgekd.sub.c", "edgekd.sub.d", "edgekd.a"]
    graph["edgekd.sub.d"].clear()
    assert find_cycle(graph) is None


def test_no_import_cycle():
    graph = import_graph()
    present = {(a, b) for a, ds in graph.items() for b in ds}
    stale = KNOWN_CYCLE_EDGES - present
    assert not stale, f"KNOWN_CYCLE_EDGES lists imports that no longer exist, remove them: {sorted(stale)}"
    for a, b in KNOWN_CYCLE_EDGES:
        graph[a].discard(b)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle among edgekd modules: {' -> '.join(cycle)} ({cycle})"


def test_known_cycle_edges_still_close_a_cycle():
    """Each pinned edge is pinned because it closes a cycle; once the way back is gone, unpin it."""
    graph = import_graph()
    for a, b in KNOWN_CYCLE_EDGES:  # the edge a -> b is part of a cycle iff a is reachable from b
        seen, todo = set(), [b]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        assert a in seen, f"{a} -> {b} no longer closes a cycle; remove it from KNOWN_CYCLE_EDGES"


# ---- module length ------------------------------------------------------------------------------

MAX_LINES = 600
# modules over MAX_LINES today, with their line count then: they may only shrink (lower the figure
# as they do, delete the entry once under the limit)
KNOWN_LONG: dict[str, int] = {}


def test_no_module_over_600_lines():
    too_long = {}
    for path in MODULES.values():
        rel = path.relative_to(ROOT).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > KNOWN_LONG.get(rel, MAX_LINES):
            too_long[rel] = n
    assert not too_long, (f"modules over {MAX_LINES} lines (or longer than pinned in KNOWN_LONG): "
                          f"{too_long}; split them by concept")


def test_known_long_modules_exist_and_are_still_long():
    for rel in KNOWN_LONG:
        path = ROOT / rel
        assert path.is_file(), f"{rel} is gone: remove it from KNOWN_LONG"
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n > MAX_LINES, f"{rel} has {n} lines now: remove it from KNOWN_LONG"


# ---- one owner for model ids and prediction keys -------------------------------------------------

MODEL_ID_LITERALS = ("student_fp32", "student_int8", "student_int8_ort", "student_torch",
                     "student.fp32.onnx", "student.int8.onnx", "student.int8.ort")
PREDICTION_KEY_PARTS = ("/adv_from/", "/adv/")

# (file, literal) -> how many string constants of that file spell it today; only allowed to shrink.
# All are user-facing text (CLI defaults, help and descriptions, a policy message): build them from
# edgekd.artifacts (e.g. artifacts.get(STUDENT_FP32).file) and delete the entries.
KNOWN_ID_SPELLINGS: dict[tuple[str, str], int] = {
    ("edgekd/commands/bench.py", "student.fp32.onnx"): 1,   # DESCRIPTION
    ("edgekd/commands/bench.py", "student.int8.onnx"): 1,   # DESCRIPTION
    ("edgekd/commands/bench.py", "student.int8.ort"): 1,    # DESCRIPTION
    ("edgekd/commands/gate.py", "student_int8"): 1,         # --set help example
    ("edgekd/gate/policy.py", "student_int8"): 1,           # Policy.models `expect` message
}
# (file, offending constant) -> count today; prediction keys built outside edgekd/predictions.py.
# edgekd/bundle.py reads preds["teacher/clean"] (predictions.clean(artifacts.TEACHER)) and writes it
# under the same spelled key into the bundle's eval.npz.
KNOWN_KEY_SPELLINGS: dict[tuple[str, str], int] = {
    ("edgekd/bundle.py", "'teacher/clean'"): 1,  # the bundle's own eval.npz key (images/, labels/, teacher/)
}


def _strings(path: Path) -> list[tuple[ast.Constant, ast.JoinedStr | None]]:
    """Every string constant of a file but docstrings (comments are not in the tree), each with the
    f-string it is a literal part of (or None)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                docstrings.add(id(first.value))
    parent: dict[int, ast.JoinedStr] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for v in node.values:
                parent[id(v)] = node
    return [(n, parent.get(id(n))) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def id_spellings(path: Path) -> Counter:
    return Counter(lit for node, _ in _strings(path) for lit in MODEL_ID_LITERALS if lit in node.value)


def key_spellings(path: Path, model_ids: set[str]) -> Counter:
    """Prediction keys spelled in a file: a constant holding "/adv/" or "/adv_from/", an f-string
    literal part starting with "/clean", or a constant "MODEL_ID/..." (e.g. "teacher/clean")."""
    found: Counter = Counter()
    for node, fstring in _strings(path):
        s = node.value
        if any(part in s for part in PREDICTION_KEY_PARTS):
            found[repr(s)] += 1
        elif fstring is not None and s.startswith("/clean"):
            found["f'…/clean'"] += 1
        elif fstring is None and "/" in s and s.split("/", 1)[0] in model_ids:
            found[repr(s)] += 1
    return found


def _scan(skip: str, count) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for path in MODULES.values():
        rel = path.relative_to(ROOT).as_posix()
        if rel == skip:
            continue
        for what, n in count(path).items():
            out[(rel, what)] = n
    return out


def _model_ids() -> set[str]:
    from edgekd import artifacts

    return set(artifacts.ARTIFACTS.names())


def test_scanners_see_code_but_not_docstrings_or_comments(tmp_path):
    p = tmp_path / "m.py"
    p.write_text('"""Writes student_int8 and student.fp32.onnx ("teacher/clean")."""\n'
                 "# student_fp32, f'{m}/clean'\n"
                 "def f(m):\n    '''student_torch: m/adv/pgd/8'''\n"
                 "    a = 'student.int8.ort'\n    b = f'{m}/clean'\n    c = f'{m}/adv_from/{m}/pgd/8'\n"
                 "    d = 'teacher/clean'\n    e = 'labels/clean'\n    return f'{m}/clean/{a}', a, b, c, d, e\n")
    assert id_spellings(p) == Counter({"student.int8.ort": 1})
    assert key_spellings(p, {"teacher", "student_int8"}) == Counter(
        {"f'…/clean'": 2, "'/adv_from/'": 1, "'teacher/clean'": 1})


def test_model_ids_and_file_names_are_spelled_only_in_artifacts():
    found = _scan("edgekd/artifacts.py", id_spellings)
    new = {k: n for k, n in found.items() if n > KNOWN_ID_SPELLINGS.get(k, 0)}
    assert not new, (f"model ids / artifact file names spelled outside edgekd/artifacts.py "
                     f"(file, literal): count: {new}; look them up in edgekd.artifacts")
    stale = {k: n for k, n in KNOWN_ID_SPELLINGS.items() if found.get(k, 0) < n}
    assert not stale, f"KNOWN_ID_SPELLINGS overstates (lower or delete): {stale}; now {found}"


def test_prediction_keys_are_built_only_in_predictions():
    ids = _model_ids()
    found = _scan("edgekd/predictions.py", lambda p: key_spellings(p, ids))
    new = {k: n for k, n in found.items() if n > KNOWN_KEY_SPELLINGS.get(k, 0)}
    assert not new, (f"predictions.npz keys built outside edgekd/predictions.py (file, constant): "
                     f"count: {new}; use edgekd.predictions.clean / perturbed / adversarial")
    stale = {k: n for k, n in KNOWN_KEY_SPELLINGS.items() if found.get(k, 0) < n}
    assert not stale, f"KNOWN_KEY_SPELLINGS overstates (lower or delete): {stale}; now {found}"


@pytest.mark.parametrize("literal", MODEL_ID_LITERALS)
def test_artifacts_itself_spells_every_id(literal):
    """The scan would be vacuous if the literals it looks for were misspelled."""
    assert id_spellings(PKG / "artifacts.py")[literal] >= 1
