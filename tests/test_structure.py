"""The package's import structure, read from the source (every import statement, function-level ones too):

- direction: ``tritongpt.kernels`` <- ``tritongpt.engine`` <- ``tritongpt.bench`` <- ``tritongpt.cli``; no module
  imports one of a higher layer, except the compatibility aliases listed in ALLOWED_UPWARD with the reason;
- no cycles between modules (a lazy import inside a function is still an edge);
- inside the engine, the concern subpackages are layers too (ENGINE_LAYERS), and the flat module paths
  (``tritongpt.engine.weights``, ...) are aliases of the very module objects in the subpackages.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"kernels": "tritongpt.kernels", "engine": "tritongpt.engine", "bench": "tritongpt.bench",
           "package": "tritongpt"}
# (importer, imported): why it may point up.
ALLOWED_UPWARD = {
    ("tritongpt.engine.cli", "tritongpt.cli"): "an alias of the command line (``python -m tritongpt.engine.cli``) "
                                               "that resolves names only when used",
}


def _layer(module: str) -> int:
    for i, prefix in enumerate(("tritongpt.kernels", "tritongpt.engine", "tritongpt.bench")):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return 3  # tritongpt itself: the command line above every layer


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = list(rel.with_suffix("").parts[1:])
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([FOLDERS[rel.parts[0]], *parts])


def modules() -> dict[str, Path]:
    return {_module_name(f): f for folder in FOLDERS for f in sorted((REPO / folder).rglob("*.py"))}


def _import_source(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` reads from, relative forms resolved against ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _import_source(node, package)
                subs = [f"{source}.{a.name}" for a in node.names]
                # `from pkg import sub` depends on the submodules; `from mod import name` on the module.
                targets = subs if all(s in mods for s in subs) else [source]
            for t in targets:
                k = known(t)
                if k is not None and k != m:
                    graph[m].add(k)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_only_point_down():
    graph = import_graph()
    up = sorted((a, b) for a, deps in graph.items() for b in deps if _layer(b) > _layer(a))
    unexplained = [f"{a} imports {b}" for a, b in up if (a, b) not in ALLOWED_UPWARD]
    assert not unexplained, "imports from a higher layer:\n" + "\n".join(unexplained)
    stale = [pair for pair in ALLOWED_UPWARD if pair not in up]
    assert not stale, f"ALLOWED_UPWARD lists imports that no longer exist: {stale}"


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_see_what_they_must():
    """The graph holds function-level imports and relative ones, and the cycle finder finds a planted cycle."""
    graph = import_graph()
    assert "tritongpt.engine.gpu_peaks" in graph["tritongpt.engine.train.train_loop"]  # imported inside a function
    assert "tritongpt.engine.model.gpt" in graph["tritongpt.engine.generation.request"]  # `from ..model.gpt import`
    assert "tritongpt.kernels.versions" in graph["tritongpt.kernels.spills"]  # `from . import versions`
    assert "tritongpt.engine" in graph["tritongpt.bench.train"]  # absolute: `from tritongpt.engine import GPT`
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("tritongpt.cli") == 3 and _layer("tritongpt.kernels.tma") == 0
    assert _engine_layer("tritongpt.engine.fsutil") == 0
    assert _engine_layer("tritongpt.engine.generation.serving.app") == 3


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(m: str, package: str, tree: ast.AST, mods: dict) -> list[str]:
    """Module ``m``'s uses of another package module's private name: ``from mod import _x``,
    ``import pkg._mod``, ``mod._x`` through a module bound by an import, and any import of a module whose path
    has a private part."""
    found: list[str] = []
    bound: dict[str, str] = {}  # local name -> package module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _import_source(node, package)
            if not source.startswith("tritongpt"):
                continue
            for a in node.names:
                if f"{source}.{a.name}" in mods:
                    bound[a.asname or a.name] = f"{source}.{a.name}"
                if source != m and (_private(a.name) or any(_private(p) for p in source.split("."))):
                    found.append(f"{m}: from {source} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tritongpt") and any(_private(p) for p in a.name.split(".")):
                    found.append(f"{m}: import {a.name}")
                if a.asname and a.name in mods:
                    bound[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and _private(node.attr) and bound[node.value.id] != m):
            found.append(f"{m}: {bound[node.value.id]}.{node.attr}")
    return found


def private_imports() -> list[str]:
    mods = modules()
    found: list[str] = []
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        found += private_uses(m, package, ast.parse(f.read_text(encoding="utf-8")), mods)
    return sorted(set(found))


def test_no_private_names_cross_modules():
    """A private name used by another module is a shared helper without a home: give it a public one."""
    found = private_imports()
    assert not found, "private names used across modules:\n" + "\n".join(found)


# ---------------------------------------------------------------------------------------------------------
# The engine's concerns

# Lowest first, each with why it sits there: a module imports only from its own concern or one listed before it.
ENGINE_LAYERS = (
    ("tritongpt.engine", "the root helpers every concern uses: errors, files, assets, schema, devices, environment"),
    ("tritongpt.engine.data", "tokenizers, token shards and datasets: reading and writing them needs no model"),
    ("tritongpt.engine.model", "the network, its config and weights: a model source brings its tokenizer (data)"),
    ("tritongpt.engine.generation", "runs a model: decoding, sampling, speculation, quantization, serving"),
    ("tritongpt.engine.train", "trains a model: samples text and instruction responses through generation"),
)
ENGINE = "tritongpt.engine"


def _engine_layer(module: str) -> int:
    ranks = [i for i, (prefix, _) in enumerate(ENGINE_LAYERS) if module == prefix or module.startswith(prefix + ".")]
    return max(ranks)


def test_engine_concerns_only_point_down():
    """A reader following a training step moves down the layers: train -> generation -> model -> data -> root.
    The package itself (``tritongpt.engine``, the public re-exports) is the one importer above them all."""
    graph = import_graph()
    up = [f"{a} imports {b}" for a, deps in sorted(graph.items()) if a.startswith(ENGINE + ".")
          for b in sorted(deps) if b.startswith(ENGINE) and _engine_layer(b) > _engine_layer(a)]
    assert not up, "engine modules importing a higher concern:\n" + "\n".join(up)
    assert not [a for a, deps in graph.items() if a.startswith(ENGINE + ".") and ENGINE in deps], \
        "only outside callers import the tritongpt.engine package itself"
    concerns = {m.split(".")[2] for m in modules() if m.count(".") >= 3 and m.startswith(ENGINE + ".")
                and (REPO / "engine" / m.split(".")[2] / "__init__.py").is_file()}
    assert concerns == {prefix.rpartition(".")[2] for prefix, _ in ENGINE_LAYERS[1:]}, "a subpackage without a rank"


# The flat layout's module paths: ``tritongpt.engine.<name>`` for each name below is the module of that name in
# the root or in one concern subpackage, the very same object.
FLAT_MODULES = (
    "assets", "classifier", "classify_cli", "classify_data", "cli", "config", "context_window", "demo", "devices",
    "envinfo", "environment", "epoch_sampling", "errors", "finetune", "finetune_classify", "finetune_config",
    "finetune_demo", "finetune_fixtures", "finetune_instruct", "finetune_plot", "fsutil", "generate_cli",
    "gpu_peaks", "instruct_data", "instruct_score", "kv_cache", "lora", "model_source", "ops", "prepare",
    "quantize", "request", "run_state", "sampling", "schema", "speculative", "textstream", "tokenizer",
    "train_checkpoint", "train_config", "train_loop", "train_plot", "train_setup", "train_steps", "weights",
)
# Flat module paths that name a concern subpackage: the package offers what the flat module offered its callers.
FLAT_NAMES = {
    "model": ("GPT", "Block", "CausalSelfAttention", "LayerNorm", "MLP", "check_token_ids", "GPTConfig", "ops",
              "weights"),
    "data": ("MAGIC", "FORMAT_VERSION", "HEADER_SIZE", "DataError", "token_dtype", "encode_header", "read_header",
             "open_shard", "write_shard", "ShardWriter", "ShardSequence", "load_meta", "TokenDataset",
             "check_shard_ids"),
    "generation": ("SYNC_EVERY", "batch_bucket", "DecodeRunner", "cpu_decode_layout", "run", "generate", "stream",
                   "validate_request", "Request", "KVCache", "SamplingParams", "sample", "draw_noise",
                   "WindowTracker", "crop"),
    "train": ("TrainingError", "Windows", "batch_rows", "batch_source", "check_run_folder", "lr_at", "main",
              "make_optimizer", "make_run_folder", "run_warnings", "train", "warn", "RunConfig", "run_loop"),
}


def _home(name: str) -> str:
    concerns = [prefix for prefix, _ in ENGINE_LAYERS]
    homes = [m for m in modules() if m.rpartition(".")[0] in concerns and m.rpartition(".")[2] == name]
    assert len(homes) == 1, f"tritongpt.engine.{name}: expected one home, found {homes}"
    return homes[0]


def test_flat_module_paths_are_the_modules_themselves():
    for name in FLAT_MODULES:
        home = _home(name)
        old = importlib.import_module(f"{ENGINE}.{name}")
        assert old is importlib.import_module(home), f"{ENGINE}.{name} is not {home}"
        assert sys.modules[f"{ENGINE}.{name}"] is sys.modules[home]
        assert old.__name__ == home and old.__spec__.name == home  # relative imports resolve from its home
    serving = sorted(m for m in modules() if m.startswith(f"{ENGINE}.generation.serving"))
    assert len(serving) > 1
    for home in serving:
        old = ENGINE + ".serving" + home[len(f"{ENGINE}.generation.serving"):]
        assert importlib.import_module(old) is importlib.import_module(home), f"{old} is not {home}"
    for name, offered in FLAT_NAMES.items():
        package = importlib.import_module(f"{ENGINE}.{name}")
        assert package.__path__, f"{ENGINE}.{name} is a concern subpackage"
        missing = [n for n in offered if not hasattr(package, n)]
        assert not missing, f"{ENGINE}.{name} lacks {missing}"


def test_flat_paths_import_first_in_a_fresh_interpreter():
    """Imported under the flat path before anything else (warnings as errors: no second copy, no spec clash)."""
    code = ("import tritongpt.engine.serving.app as a, tritongpt.engine.generation.serving.app as b\n"
            "from tritongpt.engine import train_checkpoint as c\n"
            "import tritongpt.engine.train.train_checkpoint as d\n"
            "assert a is b and c is d, (a, b, c, d)\n"
            "import importlib; importlib.reload(c)\n"
            "from tritongpt.engine.weights import CheckpointError\n"
            "from tritongpt.engine.model.weights import CheckpointError as E\n"
            "assert CheckpointError is E\n")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_private_check_sees_every_form():
    mods = {"tritongpt.kernels.a": None, "tritongpt.kernels.b": None, "tritongpt.kernels._c": None}
    code = ("from . import b\nfrom .b import _x, y\nimport tritongpt.kernels.b as bb\nimport tritongpt.kernels._c\n"
            "b._z, bb._w, b.ok, b.__doc__\n")
    found = private_uses("tritongpt.kernels.a", "tritongpt.kernels", ast.parse(code), mods)
    assert sorted(found) == sorted([
        "tritongpt.kernels.a: from tritongpt.kernels.b import _x", "tritongpt.kernels.a: import tritongpt.kernels._c",
        "tritongpt.kernels.a: tritongpt.kernels.b._z", "tritongpt.kernels.a: tritongpt.kernels.b._w"])
