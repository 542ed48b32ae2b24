"""Hand-written Triton kernels with host launchers and autograd/custom-op wrappers.

Each op validates its arguments (``ValueError``/``TypeError`` naming the argument), launches
Triton kernels on CUDA tensors (or on CPU tensors under ``TRITON_INTERPRET=1``), and is a
``torch.library`` custom op with a fake implementation, so ``torch.compile(fullgraph=True)``
traces it without graph breaks.
"""

from .flash_attention import attention
from .fused_linear import gelu_linear, linear
from .layernorm import layer_norm

__all__ = ["attention", "layer_norm", "gelu_linear", "linear"]
