"""Structural rules of the package, checked on its source (docs/architecture.md).

- nothing outside nestos_inst/cli imports nestos_inst.cli, and every import points to
  the same layer or a lower one of the table in docs/architecture.md (LAYERS below);
- no module imports a private (`_name`) name from another package, ours or not;
- no module assigns to an attribute of another module or library (monkey-patching);
- decompressors are constructed in one place, the io layer's decompressor family;
- the module import graph has no cycles (function-level imports included: a cycle
  hidden in a function is still a cycle for the reader and for refactoring);
- process-wide settings (the malloc tuning) are applied by the entry point only, never
  as a side effect of an I/O helper;
- no `typing.cast`: stages are typed by the protocols they satisfy (io/stream.py), so
  no value has to be re-labelled for the type checker.

Known offenders being removed by other work are listed by name below; each entry must
still be an offence (the list only shrinks) and nothing outside it may offend.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "nestos_inst"

# (module, offence) pairs other work is removing; see COORD.md. Delete entries, never add.
KNOWN: frozenset[tuple[str, str]] = frozenset()
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()

# typing.cast calls that stay, as (module, the call's source text), each with its reason.
# Delete entries, never add.
KNOWN_CASTS: frozenset[tuple[str, str]] = frozenset(
    {
        # zstandard's type stub asks for IO[bytes] where the library only calls read();
        # the frame adapter is a plain reader, and wrapping it in a BufferedReader only
        # to satisfy the stub would copy every compressed byte once more.
        ("nestos_inst.io.decoders", "cast('BinaryIO', self._frame)"),
    }
)

# docs/architecture.md's layers, top (front end) to bottom (foundation), by package or
# top-level module. Imports may point within a layer (the graph has no cycles) or down.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__main__", "cli"}),
    frozenset({"install", "download", "media", "customize", "service", "osmet"}),
    frozenset({"sources"}),
    frozenset({"formats", "disk", "net", "verify", "keydirs", "io"}),
    frozenset(
        {"", "errors", "jsontext", "report", "progress", "profile", "run", "fastpaths", "deps"}
    ),
)

# The io layer's decompressor family: the only module that constructs decoders.
DECOMPRESSOR_HOMES = frozenset({"nestos_inst.io.decoders"})
DECOMPRESSOR_CALLS = frozenset(
    {
        "LZMADecompressor",
        "decompressobj",
        "ZstdDecompressor",
        "GzipFile",
        "BZ2Decompressor",
    }
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _package_of(module: str) -> str:
    """The top-level unit an import crosses into: nestos_inst.<sub> or the library."""
    parts = module.split(".")
    if parts[0] != "nestos_inst":
        return parts[0]
    return ".".join(parts[:2])


def _imports(module: str, tree: ast.AST) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import statement."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _trees() -> Iterator[tuple[str, ast.Module]]:
    for module, path in MODULES.items():
        yield module, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _bound_names(tree: ast.AST) -> set[str]:
    """Local names bound by imports: modules and objects that belong to someone else."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _assigned_attributes(tree: ast.AST) -> Iterator[ast.Attribute]:
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        while targets:
            t = targets.pop()
            if isinstance(t, ast.Tuple | ast.List):
                targets.extend(t.elts)
            elif isinstance(t, ast.Starred):
                targets.append(t.value)
            elif isinstance(t, ast.Attribute):
                yield t


def _patching(tree: ast.AST) -> Iterator[str]:
    """Assignments to an imported module's or class's attribute, or to another
    object's private attribute; setattr/delattr on imported names."""
    foreign = _bound_names(tree)
    for attr in _assigned_attributes(tree):
        root = attr.value
        while isinstance(root, ast.Attribute):
            root = root.value
        own = isinstance(attr.value, ast.Name) and attr.value.id in ("self", "cls")
        if isinstance(root, ast.Name) and root.id in foreign:
            yield f"assigns {ast.unparse(attr)}"
        elif _is_private(attr.attr) and not own:
            yield f"assigns private {ast.unparse(attr)}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in foreign
        ):
            yield f"{node.func.id} on {node.args[0].id}"


def _offences() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for module, tree in _trees():
        upper = module.startswith("nestos_inst.cli") or module == "nestos_inst.__main__"
        for target, name, _line in _imports(module, tree):
            if target.startswith("nestos_inst.cli") and not upper:
                found.add((module, f"imports {target}"))
            leaf = name if name is not None else target.rsplit(".", 1)[-1]
            if _is_private(leaf) and target != module:
                found.add((module, f"imports private {target}.{leaf}"))
        found.update((module, what) for what in _patching(tree))
    return found


def _decompressor_sites() -> set[tuple[str, str]]:
    found = set()
    for module, tree in _trees():
        if module in DECOMPRESSOR_HOMES:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in DECOMPRESSOR_CALLS:
                    found.add((module, f"constructs {name}"))
    return found


def _casts(tree: ast.AST) -> Iterator[str]:
    """Source text of every call of typing.cast (imported by name, aliased or as
    typing.cast); other `.cast` methods (memoryview.cast) are not typing's."""
    names: set[str] = set()
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("typing", "typing_extensions"):
            names.update(a.asname or a.name for a in node.names if a.name == "cast")
        elif isinstance(node, ast.Import):
            modules.update(
                a.asname or a.name for a in node.names if a.name in ("typing", "typing_extensions")
            )
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Name) and func.id in names) or (
            isinstance(func, ast.Attribute)
            and func.attr == "cast"
            and isinstance(func.value, ast.Name)
            and func.value.id in modules
        ):
            yield ast.unparse(node)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, tree in _trees():
        for target, _name, _line in _imports(module, tree):
            if target in MODULES and target != module:
                graph[module].add(target)
            # `from . import x` of a package also runs the package's __init__
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_private_imports_no_patching_no_upward_imports() -> None:
    found = _offences()
    known = {k for k in KNOWN if not k[1].startswith("constructs")}
    assert found - known == set(), "new offences (see this module's docstring)"
    assert known - found == set(), "fixed: delete these entries from KNOWN"


def test_one_place_constructs_decompressors() -> None:
    found = _decompressor_sites()
    assert found - KNOWN == set(), "decode through nestos_inst.io.compress instead"
    assert {k for k in KNOWN if k[1].startswith("constructs")} - found == set(), (
        "fixed: delete these entries from KNOWN"
    )


def test_no_import_cycles() -> None:
    cycles = set(_cycles(_graph()))
    assert cycles - KNOWN_CYCLES == set()
    assert KNOWN_CYCLES - cycles == set(), "fixed: delete these entries from KNOWN_CYCLES"


def test_process_settings_only_from_the_entry_point() -> None:
    """tune_heap()/configure() change the whole process's allocator: only the entry
    point may call them (bench children call configure() as it does)."""
    found = {
        module
        for module, tree in _trees()
        for target, _name, _line in _imports(module, tree)
        if target == "nestos_inst.io.heap"
    }
    assert found == {"nestos_inst.__main__"}


def _layer(module: str) -> int:
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else ""
    for i, members in enumerate(LAYERS):
        if unit in members:
            return i
    raise AssertionError(f"{module}: not in a layer of docs/architecture.md (LAYERS)")


def test_imports_point_down_the_layers() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) < _layer(module)
    )
    assert upward == []


def test_no_typing_cast() -> None:
    """A cast hides a mismatch between what a stage is and what its consumer asks for;
    stages say which protocol they satisfy instead (docs/architecture.md)."""
    found = {(module, call) for module, tree in _trees() for call in _casts(tree)}
    assert found - KNOWN_CASTS == set(), "type the stage by the protocol it satisfies"
    assert KNOWN_CASTS - found == set(), "fixed: delete these entries from KNOWN_CASTS"


def test_the_cast_finder_finds_casts() -> None:
    tree = ast.parse(
        "import typing\n"
        "import typing as t\n"
        "from typing import cast as c\n"
        "from typing import cast\n"
        "cast(int, x)\n"
        "c('BinaryIO', y)\n"
        "typing.cast(str, z)\n"
        "t.cast(bytes, w)\n"
        "memoryview(b).cast('B')\n"
    )
    assert sorted(_casts(tree)) == [
        "c('BinaryIO', y)",
        "cast(int, x)",
        "t.cast(bytes, w)",
        "typing.cast(str, z)",
    ]


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_patch_finder_finds_patches() -> None:
    tree = ast.parse(
        "import httpcore\n"
        "from x import Conn\n"
        "httpcore.Conn.SIZE = 1\n"
        "Conn.SIZE += 1\n"
        "client._pool = None\n"
        "self._mine = 1\n"
        "setattr(httpcore, 'a', 1)\n"
    )
    assert sorted(_patching(tree)) == [
        "assigns Conn.SIZE",
        "assigns httpcore.Conn.SIZE",
        "assigns private client._pool",
        "setattr on httpcore",
    ]


def test_only_the_front_end_and_the_reporter_touch_stderr() -> None:
    """Library code reports through nestos_inst.report (one reporter object)."""
    allowed = {"nestos_inst.report", "nestos_inst.__main__"}
    found = []
    for module, tree in _trees():
        if module in allowed or module.startswith("nestos_inst.cli"):
            continue
        found += [
            f"{module}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.stderr"
        ]
    assert found == []


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_compat_citations_resolve_and_stay_in_the_repo() -> None:
    """Code, tests and docs cite sections of docs/compat.md by anchor; each exists, and no
    document outside the repository is cited."""
    root = PKG.parent
    doc = (root / "docs" / "compat.md").read_text(encoding="utf-8")
    anchors = {_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", doc, flags=re.M)}
    cited: set[str] = set()
    for top in ("nestos_inst", "tests", "docs", "bench"):
        for path in (root / top).rglob("*"):
            if path.suffix not in (".py", ".md") or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8")
            assert "compat" + "-spec" not in text, path
            for m in re.finditer(r"docs/compat\.md#([\w-]+)((?:, #[\w-]+)*)", text):
                cited.add(m.group(1))
                cited.update(re.findall(r"#([\w-]+)", m.group(2)))
    assert cited
    assert cited - anchors == set()
