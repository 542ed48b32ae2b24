"""Hand-written Triton kernels with host launchers and autograd/custom-op wrappers."""
