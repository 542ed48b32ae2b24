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
    from . import _compat

    _compat.install()  # before the kernel modules apply triton.autotune (Triton <= 3.3 without a GPU)

    from .decode_attention import decode_attention
    from .flash_attention import attention
    from .fused_linear import gelu_linear, linear
    from .layernorm import layer_norm

    __all__ = ["attention", "decode_attention", "layer_norm", "gelu_linear", "linear"]
else:
    # Imported as a top-level ``kernels`` because the repository root is on sys.path (``python -m``
    # from the checkout). transformers does exactly that when it probes for the unrelated PyPI
    # package ``kernels``. Importing the ops here would register every ``tritongpt::`` custom op a
    # second time with new Python functions, which corrupted dispatch and crashed the process
    # (tests/test_interpreter.py::test_top_level_kernels_import_is_inert). Stay an empty module.
    __all__ = []
    __version__ = "N/A"
