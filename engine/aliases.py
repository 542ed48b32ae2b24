"""The engine's flat module paths (``tritongpt.engine.weights``, ...) as aliases of the modules' homes in the
concern subpackages (``tritongpt.engine.model.weights``, ...).

``tritongpt.engine.weights`` is ``tritongpt.engine.model.weights`` itself: the same module object under two
names in ``sys.modules``, so an attribute set through one path (a monkeypatch, a registry) is seen through the
other, and every submodule of an aliased package resolves the same way (``tritongpt.engine.serving.app``).
A finder at the front of ``sys.meta_path`` answers for the old names only; its loader hands the import system
the module it has already imported under its new name instead of executing the file a second time.

Flat paths that name a subpackage (``tritongpt.engine.model``, ``.data``, ``.generation``, ``.train``) need no
entry: those packages' ``__init__`` offer the names of the module that each path names in the flat layout.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

ENGINE = "tritongpt.engine"

# old name (under tritongpt.engine) -> new name (under tritongpt.engine)
MODULES = {
    # model/
    "config": "model.config",
    "ops": "model.ops",
    "weights": "model.weights",
    "lora": "model.lora",
    "classifier": "model.classifier",
    "model_source": "model.model_source",
    # data/
    "tokenizer": "data.tokenizer",
    "prepare": "data.prepare",
    "epoch_sampling": "data.epoch_sampling",
    "classify_data": "data.classify_data",
    "instruct_data": "data.instruct_data",
    "finetune_fixtures": "data.finetune_fixtures",
    # generation/
    "sampling": "generation.sampling",
    "kv_cache": "generation.kv_cache",
    "request": "generation.request",
    "context_window": "generation.context_window",
    "speculative": "generation.speculative",
    "quantize": "generation.quantize",
    "textstream": "generation.textstream",
    "generate_cli": "generation.generate_cli",
    "classify_cli": "generation.classify_cli",
    # train/
    "train_config": "train.train_config",
    "train_loop": "train.train_loop",
    "train_steps": "train.train_steps",
    "train_setup": "train.train_setup",
    "train_checkpoint": "train.train_checkpoint",
    "train_plot": "train.train_plot",
    "run_state": "train.run_state",
    "finetune": "train.finetune",
    "finetune_config": "train.finetune_config",
    "finetune_classify": "train.finetune_classify",
    "finetune_instruct": "train.finetune_instruct",
    "finetune_plot": "train.finetune_plot",
    "finetune_demo": "train.finetune_demo",
    "demo": "train.demo",
    "instruct_score": "train.instruct_score",
}
# Aliased packages: every submodule under the flat name is the one under the subpackage's name.
PACKAGES = {
    "serving": "generation.serving",
}


def new_name(fullname: str) -> str | None:
    """The home of the old module path ``fullname`` (a full dotted name), or None when it is no alias."""
    if not fullname.startswith(ENGINE + "."):
        return None
    rest = fullname[len(ENGINE) + 1:]
    if rest in MODULES:
        return f"{ENGINE}.{MODULES[rest]}"
    for old, new in PACKAGES.items():
        if rest == old or rest.startswith(old + "."):
            return f"{ENGINE}.{new}{rest[len(old):]}"
    return None


def old_names() -> list[str]:
    """Every old module path in the table (the aliased packages' submodules are not listed one by one)."""
    return [f"{ENGINE}.{old}" for old in (*MODULES, *PACKAGES)]


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(spec.loader_state)
        spec.loader_state = module.__spec__  # restored by exec_module
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system has set the module's __spec__ to the alias's spec: give the module its own back,
        # so relative imports, reloads and ``python -m`` keep seeing where it really lives.
        module.__spec__ = module.__spec__.loader_state


class AliasFinder(importlib.abc.MetaPathFinder):
    loader = _AliasLoader()

    def find_spec(self, fullname, path=None, target=None):
        target_name = new_name(fullname)
        if target_name is None:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self.loader, loader_state=target_name)
        return spec


def install() -> None:
    """Put the alias finder first on ``sys.meta_path`` (once): before the path finder, which would otherwise
    find an aliased package's submodule file through the new package's ``__path__`` and load it twice."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())
