"""The architecture as tests: imports point down only, the daemon and servicer speak domain types, tools agree."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each layer, as folders of the tree, and the layers it must never import.
# server/ reads as the architecture: the pipeline's pure stages, the round (one state machine), operations (disk,
# status, metrics, HTTP), the wire edge; app.py composes them. Arrows point down that list only.
SERVER_LAYERS = ("server/pipeline", "server/round", "server/ops", "server/wire", "server")
FORBIDDEN = {
    "common": ("server", "client", *SERVER_LAYERS),
    **{layer: ("client", *SERVER_LAYERS[i + 1:]) for i, layer in enumerate(SERVER_LAYERS)},
    "client/model": ("client/daemon", "client/sim", "server"),
    "client/embedded": ("client/daemon", "client/sim", "server"),
    "client/daemon": ("client/sim", "server"),
    "client/sim": ("server",),
}
DAEMON = {"app.py", "daemon.py", "connection.py", "store.py", "data.py", "offline.py", "__init__.py"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "server":
        return f"server/{rel.parts[1]}" if len(rel.parts) > 2 else "server"
    if rel.parts[0] != "client":
        return rel.parts[0]
    return f"client/{rel.parts[1]}" if len(rel.parts) > 2 else "client/daemon"


def imported_files(path: Path) -> list[Path]:
    """The repository files `path` imports, resolved from its relative imports as a reader would."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level > 0 or not (node.module or "").startswith("pfeddc"), (
                f"{path.relative_to(ROOT)}: use a relative import instead of {node.module}")
            if node.level == 0:
                continue
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*(node.module or "").split(".")) if node.module else base
            names = [target / a.name for a in node.names] if not node.module else [target]
            for t in names:
                out += [p for p in (t.with_suffix(".py"), t / "__init__.py") if p.exists()]
    return out


def package_files() -> list[Path]:
    return [p for top in ("common", "server", "client") for p in (ROOT / top).rglob("*.py") if "proto" not in p.parts]


@pytest.mark.parametrize("path", package_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_layout_imports_point_down_only(path: Path) -> None:
    layer = layer_of(path)
    for target in imported_files(path):
        assert layer_of(target) not in FORBIDDEN.get(layer, ()), (
            f"{path.relative_to(ROOT)} ({layer}) imports {target.relative_to(ROOT)} ({layer_of(target)})")


@pytest.mark.parametrize("path", [p for p in package_files() if not layer_of(p).startswith("server")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_layout_no_lower_layer_names_the_server_package(path: Path) -> None:
    """Not even as a string (`python -m pfeddc.server.app`): the sim starts the coordinator by its command."""
    assert "pfeddc.server" not in path.read_text(), f"{path.relative_to(ROOT)} names pfeddc.server"


def test_layout_daemon_modules_import_no_generated_stub_except_the_connection() -> None:
    for name in DAEMON - {"connection.py"}:
        source = (ROOT / "client" / name).read_text()
        assert "proto" not in source.split('"""', 2)[-1], f"client/{name} reaches into the generated stubs"


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, every import counted (in functions and under TYPE_CHECKING too): the
    package's (relative imports), the benchmarks' (siblings by name) and the tools' (tools.*)."""
    files = {**{_module(p): p for p in package_files()},
             **{p.stem: p for p in (ROOT / "benchmarks").glob("*.py")},
             **{".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
                for p in (ROOT / "tools").rglob("*.py")}}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                targets |= {module, *(f"{module}.{a.name}" for a in node.names)}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _module(path: Path) -> str:
    return ".".join(["pfeddc", *path.relative_to(ROOT).with_suffix("").parts]).removesuffix(".__init__")


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                found.append(sorted([v, *group]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_layout_no_import_circles_anywhere() -> None:
    """Not in the package, the benchmarks or the tools; imports in functions and under TYPE_CHECKING count too
    (they show the same knot)."""
    graph = import_graph()
    assert len(graph) > 100 and circles(graph) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check can fail


def test_layout_common_holds_only_what_client_and_server_both_import() -> None:
    graph = import_graph()

    def reached(side: str) -> set[str]:
        todo, seen = [m for m in graph if m.startswith(f"pfeddc.{side}")], set()
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += graph[module]
        return seen

    both = reached("client") & reached("server")
    common = {m for m in graph if m.startswith("pfeddc.common")}
    assert common and common <= both, f"common/ modules one side never imports: {sorted(common - both)}"


# Methods of a protobuf message: whoever calls one is building or reading a message, which is wire.py's job.
MESSAGE_METHODS = {"SerializeToString", "FromString", "ParseFromString", "HasField", "CopyFrom", "MergeFrom",
                   "ListFields", "WhichOneof", "ClearField", "DESCRIPTOR"}


def _proto_imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names += [f"{node.module}.{a.name}" if node.module else a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return [n for n in names if "_pb2" in n or "protobuf" in n]


def _wire_call(node: ast.AST, suffix: str) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.endswith(suffix)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("wire", "wire_secure"))


@pytest.mark.parametrize("name", ["client/connection.py", "server/wire/servicer.py"])
def test_layout_connection_and_servicer_touch_no_protobuf_message(name: str) -> None:
    """They speak domain types: every request and reply is built and read by common/wire.py."""
    tree = ast.parse((ROOT / name).read_text())
    allowed = {"common.proto.federation_pb2_grpc"} if name.startswith("client") else set()
    assert set(_proto_imports(tree)) <= allowed, f"{name} imports {_proto_imports(tree)}: only the stub may be"
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & MESSAGE_METHODS
    assert not used, f"{name} calls protobuf message methods {used}: convert with common/wire.py"


def test_layout_connection_sends_and_reads_every_call_through_the_wire() -> None:
    tree = ast.parse((ROOT / "client/connection.py").read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Attribute) and n.func.value.attr == "_stub"]
    assert len(calls) >= 6
    for call in calls:
        function: ast.AST = call
        up: ast.AST = call
        read = False
        while not isinstance(function, ast.FunctionDef):
            function = parents[function]
        while up in parents and up is not function:
            up = parents[up]
            read = read or _wire_call(up, "_from_proto")
        built = {t.id for n in ast.walk(function) if isinstance(n, ast.Assign) and _wire_call(n.value, "_to_proto")
                 for t in n.targets if isinstance(t, ast.Name)}
        request, what = call.args[0], f"line {call.lineno}: {ast.unparse(call.func)}"
        assert read, f"{what}: its reply is read outside wire.*_from_proto"
        assert _wire_call(request, "_to_proto") or (isinstance(request, ast.Name) and request.id in built), (
            f"{what}: its request is not built by wire.*_to_proto")


def test_layout_type_checker_path_names_the_project_version() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    version = config["project"]["version"]
    assert f"pfeddc-{version}-py3-none-any" in config["tool"]["mypy"]["mypy_path"], (
        "bump tool.mypy.mypy_path with the project version (the strict editable link tree is named after it)")
    assert config["project"]["requires-python"] == ">=3.11"
    assert config["tool"]["ruff"]["target-version"] == "py311" and config["tool"]["mypy"]["python_version"] == "3.11"


def numeric_constants() -> dict[str, list[str]]:
    """Module-level UPPER_CASE names bound to a number, by name -> the files that bind one."""
    out: dict[str, list[str]] = {}
    for path in package_files():
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id.isupper() and isinstance(node.value, ast.Constant)
                    and type(node.value.value) in (int, float)):
                out.setdefault(node.targets[0].id, []).append(str(path.relative_to(ROOT)))
    return out


def test_layout_every_limit_and_default_is_written_once() -> None:
    twice = {name: files for name, files in numeric_constants().items() if len(files) > 1}
    assert not twice, f"constants defined in more than one module (import them from one): {twice}"
    shared = {"MAX_ABS_VALUE": "common/spec.py", "MAX_HOLD_S": "common/messages.py",
              "MAX_COSINE": "client/model/classnames.py"}
    assert {name: numeric_constants()[name] for name in shared} == {n: [f] for n, f in shared.items()}


def test_layout_no_module_of_the_package_or_its_tools_is_over_300_lines() -> None:
    """STYLE.md's ~250 lines is a guide, never a target to pack statements for; past 300 a module does two things
    (the largest, server/round/rounds.py, is one state machine: every transition of the round's one owner)."""
    files = [*package_files(), *(ROOT / "tools").rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"modules over 300 lines: {long}"


def packed_assignments(source: str) -> list[int]:
    """Lines where several values are assigned at once (`a, b = x, y`) with no value reading a target: one
    assignment per line reads better. A swap or hand-over (`event, self._event = self._event, None`) stays."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple)
                and isinstance(node.value, ast.Tuple)):
            targets = {ast.unparse(t) for t in node.targets[0].elts}
            read = {ast.unparse(n) for v in node.value.elts for n in ast.walk(v)
                    if isinstance(n, ast.Name | ast.Attribute | ast.Subscript)}
            if not targets & read:
                lines.append(node.lineno)
    return lines


def test_layout_no_packed_assignments() -> None:
    files = [*package_files(), *(ROOT / "tools").rglob("*.py")]
    packed = {str(p.relative_to(ROOT)): found for p in files if (found := packed_assignments(p.read_text()))}
    assert not packed, f"several assignments on one line: {packed}"
    assert packed_assignments("a, b = 1, 2\nx, y = y, x\n") == [1]  # the check can fail, and spares swaps


def test_layout_embedded_package_holds_its_loader_and_weights_only() -> None:
    """The pipeline that builds the weights is tools/embedded, never installed (docs/architecture.md)."""
    shipped = {p.name for p in (ROOT / "client" / "embedded").iterdir() if p.name != "__pycache__"}
    assert shipped == {"__init__.py", "NOTICE.md", "weights"}, shipped
    installed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert not [p for p in installed if p.startswith("tools")]
