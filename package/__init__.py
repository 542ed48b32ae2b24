"""tritongpt: hand-written Triton kernels under a minimal GPT-2 engine.

Subpackages: ``tritongpt.kernels`` (kernels/), ``tritongpt.engine`` (engine/), ``tritongpt.bench``
(bench/), ``tritongpt.configs`` (configs/). This folder only makes ``python -m tritongpt`` (and so
``torchrun -m tritongpt train ...``) work.
"""
