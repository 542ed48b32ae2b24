"""Hand-written Triton kernels with host launchers and autograd/custom-op wrappers.

Each op validates its arguments (``ValueError``/``TypeError`` naming the argument), launches
Triton kernels on CUDA tensors (or on CPU tensors under ``TRITON_INTERPRET=1``), and is a
``torch.library`` custom op with a fake implementation, so ``torch.compile(fullgraph=True)``
traces it without graph breaks.

``decode_attention`` (KV-cache flash-decoding, one query token per row) is inference-only: it has
no autograd formula, and with ``k_new``/``v_new`` it writes the caches in place (the op declares
them mutated), so a decode step's cache append and attention are one launch (two with the split
merge).
"""

if __name__ == "tritongpt.kernels":
    from . import compat, interpreter

    compat.install()  # before the kernel modules apply triton.autotune (Triton <= 3.3 without a GPU)
    if interpreter.interpreter_enabled():
        # Plain Python use under TRITON_INTERPRET=1 gets the same interpreter fixes as the CLI and the
        # tests; each patch goes in only where its probe shows the bug in this Triton.
        interpreter.patch_interpreter()

    from .decode_attention import decode_attention
    from .flash_attention import attention
    from .fused_linear import gelu_linear, linear
    from .int8_linear import int8_linear
    from .layernorm import layer_norm
    from .linear_cross_entropy import linear_cross_entropy
    from .paged_decode_attention import paged_decode_attention

    compat.install_variant_pruning()  # after the kernel modules exist (Tritons that spill on some configs)

    __all__ = ["attention", "decode_attention", "layer_norm", "gelu_linear", "linear", "linear_cross_entropy",
               "int8_linear", "paged_decode_attention"]
else:
    # Imported as top-level ``kernels``: the repository root is on sys.path (``python -c``/``-m`` or a
    # notebook in the checkout) and the name belongs to PyPI's ``kernels`` (transformers imports it).
    # Hand over to the installed distribution; registering the ``tritongpt::`` ops a second time
    # from this copy would corrupt the dispatcher, so no kernel module is imported here.
    import importlib.machinery
    import importlib.util
    import os
    import sys

    def _installed_kernels_spec(name: str):
        checkout = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        others = [p for p in sys.path if os.path.realpath(p or os.curdir) != checkout]
        return importlib.machinery.PathFinder.find_spec(name, others)

    _spec = _installed_kernels_spec(__name__)
    if _spec is None or _spec.loader is None:
        raise ModuleNotFoundError(
            f"No module named {__name__!r} (this checkout's kernels/ folder is tritongpt.kernels; "
            f"the PyPI package 'kernels' is not installed)", name=__name__)
    # The import system returns whatever sys.modules holds under the name once this file ends.
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _module
    _spec.loader.exec_module(_module)
