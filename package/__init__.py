"""tritongpt: hand-written Triton kernels under a minimal GPT-2 engine.

Subpackages: ``tritongpt.kernels`` (kernels/), ``tritongpt.engine`` (engine/), ``tritongpt.bench``
(bench/), ``tritongpt.configs`` (configs/). This folder holds the command line above them all
(``tritongpt.cli``) and makes ``python -m tritongpt`` (and so ``torchrun -m tritongpt train ...``) work.
"""
