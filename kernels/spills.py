"""Kernel configs that a given Triton release compiles with register spills, and the pruning that keeps
them from GPU users and from the static gate.

The config tables in the kernel modules hold what the newest tested Triton compiles spill-free. Older
compilers allocate registers differently, so ``SPILLS`` lists, per Triton (major, minor), the shipped
forms that spill there (found by compiling every variant under that Triton:
``tritongpt inspect --targets sm_80,sm_89,sm_90a``), each with the config to use instead where nothing
else would be left for that shape class. Where the running Triton has a row, ``compat.install`` and
``compat.install_variant_pruning`` route both consumers of the kernel tables through it:

- the autotuner: each kernel's ``early_config_prune`` is wrapped (:func:`pruning`), so the configs it
  keeps lose those listed for this GPU and this call's head dim, dtype, causality or flags;
- the static gate and the AOT tests: each kernel module's ``variants()`` is passed through
  :func:`prune_variants`, which drops the listed (variant, target) pairs and ships the fallbacks, so the
  gate compiles exactly what the autotuner may pick.

The kernel files themselves stay untouched: the compile baseline is keyed by a hash of each kernel
file, and on a Triton without a row nothing is wrapped at all.

This table is the static half. At launch on a GPU, ``autotune_prune`` compiles what the prune keeps
(this table's wrapper included) for the user's device and drops whatever spills or does not fit, on any
Triton; the table still matters where nothing compiles: it keeps ``variants()`` (the compile gate) to
what the autotuner may pick, and supplies fallbacks where a shape class would otherwise be left empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from . import versions


@dataclasses.dataclass(frozen=True)
class Spill:
    """One config that spills under a Triton release, for the inputs described by ``form``.

    ``form`` names the facts that identify the compiled form: the kernel's constexprs (tile sizes,
    ``BLOCK_D``, ``CAUSAL``, flags), ``num_warps``, ``num_stages`` and ``dtype`` (``"fp16"``, ``"bf16"``,
    ``"fp32"``, the first tensor argument's); a tuple value matches any of its items. Only facts known
    before the autotuner picks a config may appear, so no ``EVEN_*`` (the kernels' heuristics set those
    after the prune from each launch's shape): one entry covers the even and the masked form alike.
    ``fallback`` (config kwargs plus ``num_warps``/``num_stages``) replaces the config where the prune
    would otherwise keep nothing; it was compiled spill-free under the same Triton for these inputs."""

    kernel: str  # the @triton.jit function's name
    archs: tuple[int, ...]  # compile targets where it spills: 80 (sm_80), 89 (sm_89), 90 (sm_90a)
    form: Mapping[str, Any]
    fallback: Mapping[str, int] | None = None
    measured: str = ""  # what the compiler reported: the forms that spill, registers + stack bytes

    def matches(self, facts: Mapping[str, Any], arch: int) -> bool:
        # sm_100a is not compiled under the old Tritons these entries are for: it takes sm_90a's entries
        # (the config tables use sm_90a's small tiles there too).
        if arch not in self.archs and not (arch == 100 and 90 in self.archs):
            return False
        for key, want in self.form.items():
            if key not in facts:
                return False
            have = facts[key]
            if not (have in want if isinstance(want, tuple) else have == want):
                return False
        return True


_HALF = ("fp16", "bf16")  # bf16 compiles to fp16's code but for converts: both spill or neither


def _tile(block_m: int, block_n: int, num_warps: int, num_stages: int) -> dict[str, int]:
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": num_warps, "num_stages": num_stages}


_FWD, _DKDV, _DQ = "_attn_fwd_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel"
_LIN_FWD, _LIN_DW = "_fused_linear_fwd_kernel", "_linear_bwd_dw_kernel"
_DECODE, _PAGED = "_decode_split_kernel", "_paged_decode_split_kernel"
_INT8 = "_int8_linear_kernel"
# Kernels launched with one fixed config (no autotuner): their launchers read the whole form, EVEN_* too.
FIXED_CONFIG_KERNELS = (_DECODE, _PAGED)
_DECODE_8W = {"num_warps": 8, "num_stages": 2}

# Compiled with Triton 3.3.1 (what torch 2.7 pins) for sm_80, sm_89 and sm_90a, every shipped pointer-path
# variant in the launch specialisation (aligned even / ragged / unaligned forms), each compile in LLVM's
# steady state (bench/aot.py): these spilled, nothing else did. An entry names facts the autotuner knows,
# so it covers every form of its class (the spilling form is in ``measured``). sm_100a and the TMA kernels
# are not compiled under 3.3 (no tensor descriptors there). The decode split kernel has no autotuner: its
# launcher asks :func:`fallback_for` for its one config, and its entries keep BLOCK_N (the split plan
# depends on it) and change only the warps.
SPILLS: dict[tuple[int, int], tuple[Spill, ...]] = {
    (3, 3): (
        Spill(_DKDV, (90,), {**_tile(16, 16, 4, 2), "BLOCK_D": 128, "dtype": "fp32", "CAUSAL": False},
              fallback=_tile(16, 16, 8, 2),
              measured="fp32,ragged,noncausal@sm_90a: 255 regs + 88 B; 16x16 w8: 70-106 regs"),
        Spill(_DKDV, (90,), {**_tile(16, 16, 4, 2), "BLOCK_D": 128, "dtype": "fp32", "CAUSAL": True},
              fallback=_tile(16, 16, 8, 2),
              measured="fp32,ragged,unaligned@sm_90a: 255 regs + 48 B, fp32,ragged@sm_90a: 255 regs + 72 B; 16x16 w8: 74-96 regs"),
        Spill(_DKDV, (90,), {**_tile(32, 128, 8, 2), "BLOCK_D": 128, "dtype": _HALF, "CAUSAL": False},
              measured="fp16,ragged,noncausal@sm_90a: 255 regs + 8 B"),
        Spill(_DKDV, (90,), {**_tile(32, 128, 8, 2), "BLOCK_D": 128, "dtype": _HALF, "CAUSAL": True},
              measured="fp16,ragged@sm_90a: 255 regs + 24 B"),
        Spill(_DKDV, (80,), {**_tile(32, 32, 8, 2), "BLOCK_D": 16, "dtype": _HALF, "CAUSAL": True},
              measured="fp16,ragged,unaligned@sm_80: 128 regs + 8 B"),
        Spill(_DKDV, (90,), {**_tile(32, 32, 8, 2), "BLOCK_D": 64, "dtype": _HALF, "CAUSAL": False},
              measured="fp16,ragged,noncausal,unaligned@sm_90a: 128 regs + 24 B"),
        Spill(_DKDV, (90,), {**_tile(64, 64, 8, 2), "BLOCK_D": 128, "dtype": _HALF, "CAUSAL": False},
              measured="fp16,ragged,noncausal@sm_90a: 255 regs + 40 B"),
        Spill(_DQ, (80, 90), {**_tile(32, 16, 4, 2), "BLOCK_D": 128, "dtype": "fp32", "CAUSAL": False},
              fallback=_tile(32, 16, 8, 2),
              measured="fp32,noncausal@sm_90a: 255 regs + 272 B, fp32,ragged,noncausal,unaligned@sm_80: 168 regs + 8 B; 32x16 w8: 75-120 regs"),
        Spill(_DQ, (80,), {**_tile(32, 16, 4, 2), "BLOCK_D": 128, "dtype": "fp32", "CAUSAL": True},
              fallback=_tile(32, 16, 8, 2),
              measured="fp32,ragged,unaligned@sm_80: 168 regs + 8 B; 32x16 w8: 76-118 regs"),
        Spill(_DQ, (80,), {**_tile(32, 32, 4, 2), "BLOCK_D": 32, "dtype": "fp32", "CAUSAL": True},
              measured="fp32@sm_80: 96 regs + 8 B"),
        Spill(_DQ, (90,), {**_tile(32, 32, 4, 2), "BLOCK_D": 64, "dtype": "fp32", "CAUSAL": False},
              measured="fp32,ragged,noncausal@sm_90a: 255 regs + 24 B"),
        Spill(_DQ, (90,), {**_tile(32, 32, 4, 2), "BLOCK_D": 64, "dtype": "fp32", "CAUSAL": True},
              measured="fp32,ragged@sm_90a: 255 regs + 24 B"),
        Spill(_DQ, (80,), {**_tile(64, 32, 4, 2), "BLOCK_D": 32, "dtype": _HALF, "CAUSAL": True},
              measured="fp16,ragged,unaligned@sm_80: 128 regs + 16 B"),
        Spill(_FWD, (80,), {**_tile(128, 64, 8, 3), "BLOCK_D": 128, "dtype": _HALF, "CAUSAL": False},
              measured="fp16,noncausal@sm_80: 255 regs + 16 B"),
        Spill(_FWD, (80,), {**_tile(128, 64, 8, 4), "BLOCK_D": 128, "dtype": _HALF, "CAUSAL": False},
              measured="fp16,noncausal@sm_80: 255 regs + 16 B"),
        Spill(_FWD, (80,), {**_tile(16, 16, 4, 2), "BLOCK_D": 128, "dtype": "fp32", "CAUSAL": False},
              fallback=_tile(16, 16, 4, 1),
              measured="fp32,noncausal@sm_80: 72 regs + 8 B; 16x16 s1: 80-96 regs"),
        Spill(_FWD, (90,), {**_tile(16, 16, 4, 2), "BLOCK_D": 64, "dtype": "fp32", "CAUSAL": False},
              measured="fp32,noncausal@sm_90a: 96 regs + 8 B"),
        Spill(_FWD, (80,), {**_tile(32, 32, 4, 2), "BLOCK_D": 64, "dtype": "fp32", "CAUSAL": False},
              measured="fp32,ragged,noncausal@sm_80: 128 regs + 16 B"),
        Spill(_FWD, (80, 90), {**_tile(32, 32, 4, 2), "BLOCK_D": 64, "dtype": "fp32", "CAUSAL": True},
              measured="fp32,ragged,unaligned@sm_90a: 255 regs + 40 B, fp32,ragged@sm_80: 128 regs + 8 B, fp32,ragged@sm_90a: 255 regs + 72 B"),
        Spill(_FWD, (90,), {**_tile(64, 64, 4, 3), "BLOCK_D": 128, "dtype": _HALF, "CAUSAL": False},
              measured="fp16,ragged,noncausal,unaligned@sm_90a: 255 regs + 56 B"),
        Spill(_FWD, (90,), {**_tile(64, 64, 4, 3), "BLOCK_D": 128, "dtype": _HALF, "CAUSAL": True},
              measured="fp16,ragged,unaligned@sm_90a: 255 regs + 48 B"),
        Spill(_LIN_FWD, (80, 89, 90), {"BLOCK_K": 32, "BLOCK_M": 128, "BLOCK_N": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4, "dtype": _HALF},
              measured="GELU,STORE_GELU_GRAD@sm_89: 255 regs + 152 B, GELU,STORE_GELU_GRAD@sm_80: 255 regs + 136 B, GELU,STORE_GELU_GRAD@sm_80: 255 regs + 144 B, GELU,STORE_GELU_GRAD@sm_90a: 255 regs + 32 B, GELU,STORE_G"),
        Spill(_LIN_FWD, (80,), {"BLOCK_K": 64, "BLOCK_M": 128, "BLOCK_N": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 3, "dtype": _HALF},
              measured="GELU,STORE_GELU_GRAD@sm_80: 255 regs + 128 B, GELU,STORE_GELU_GRAD@sm_80: 255 regs + 160 B"),
        Spill(_LIN_DW, (80,), {"BLOCK_K": 128, "BLOCK_M": 64, "BLOCK_N": 128, "GROUP_N": 8, "num_warps": 8, "num_stages": 3, "dtype": _HALF},
              measured="HAS_BIAS@sm_80: 255 regs + 80 B"),
        Spill(_LIN_DW, (80, 90), {"BLOCK_K": 64, "BLOCK_M": 64, "BLOCK_N": 64, "GROUP_N": 8, "num_warps": 4, "num_stages": 3, "dtype": "fp32"},
              fallback={"BLOCK_N": 64, "BLOCK_K": 64, "BLOCK_M": 32, "GROUP_N": 8, "num_warps": 4, "num_stages": 3},
              measured="HAS_BIAS@sm_80: 255 regs + 32 B, HAS_BIAS@sm_90a: 255 regs + 48 B; 64x64x32: 193-216 regs"),
        Spill(_LIN_FWD, (89,), {"BLOCK_K": 32, "BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2, "dtype": _HALF,
                                "HAS_RESIDUAL": True, "GELU": False},
              measured="fp16,HAS_BIAS,HAS_RESIDUAL,unaligned@sm_89: 128 regs + 8 B (32x64x32 takes it)"),
        # Decode: 8 B of stack at 56-96 registers; 8 warps on the same BLOCK_N: 60-80 registers, no stack.
        Spill(_DECODE, (80,), {"num_warps": 4, "BLOCK_D": 16, "BLOCK_N": 128, "SINGLE": True, "EVEN_D": True, "dtype": _HALF},
              fallback=_DECODE_8W, measured="fp16,single and fp16,append,single@sm_80: 56 regs + 8 B"),
        Spill(_DECODE, (90,), {"num_warps": 4, "BLOCK_D": 32, "BLOCK_N": 64, "SINGLE": True, "HAS_NEW": True, "EVEN_D": True,
                               "dtype": _HALF}, fallback=_DECODE_8W, measured="fp16,append,single@sm_90a: 56 regs + 8 B"),
        Spill(_DECODE, (80,), {"num_warps": 4, "BLOCK_D": 64, "BLOCK_N": 64, "SINGLE": True, "HAS_NEW": True, "EVEN_D": True,
                               "dtype": _HALF}, fallback=_DECODE_8W, measured="fp16,append,single@sm_80: 64 regs + 8 B"),
        Spill(_DECODE, (90,), {"num_warps": 4, "BLOCK_D": 64, "BLOCK_N": 64, "SINGLE": True, "EVEN_D": False, "dtype": "fp32"},
              fallback=_DECODE_8W, measured="fp32,ragged,single@sm_90a: 96 regs + 8 B"),
        Spill(_DECODE, (80,), {"num_warps": 4, "BLOCK_D": 128, "BLOCK_N": 16, "HAS_NEW": True, "dtype": "fp32"},
              fallback=_DECODE_8W, measured="fp32,append,unaligned@sm_80: 80 regs + 8 B"),
        # The paged decode kernel: the same 8 B of stack in three forms; 8 warps on the same BLOCK_N.
        Spill(_PAGED, (90,), {"num_warps": 4, "BLOCK_D": 128, "BLOCK_N": 32, "SINGLE": False, "HAS_NEW": True,
                              "EVEN_D": True, "dtype": "bf16"},
              fallback=_DECODE_8W, measured="bf16,append@sm_90a: 72 regs + 8 B"),
        Spill(_PAGED, (90,), {"num_warps": 4, "BLOCK_D": 64, "BLOCK_N": 64, "SINGLE": False, "HAS_NEW": True,
                              "EVEN_D": True, "dtype": "bf16"},
              fallback=_DECODE_8W, measured="bf16,append@sm_90a: 72 regs + 8 B"),
        Spill(_PAGED, (80,), {"num_warps": 4, "BLOCK_D": 64, "BLOCK_N": 64, "SINGLE": True, "HAS_NEW": False,
                              "EVEN_D": True, "dtype": "fp32"},
              fallback=_DECODE_8W, measured="fp32,single@sm_80: 96 regs + 8 B"),
        Spill(_INT8, (80,), {"BLOCK_N": 128, "BLOCK_M": 64, "BLOCK_K": 64, "GROUP_N": 8, "num_warps": 4,
                             "num_stages": 4, "dtype": "bf16"},
              measured="bf16,bias@sm_80: 168 regs + 8 B"),
    ),
}


_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_LAUNCH = ("num_warps", "num_stages")


def rules(kernel: str | None = None) -> tuple[Spill, ...]:
    """The entries for the running Triton (all kernels, or ``kernel``'s)."""
    found = SPILLS.get(versions.triton_version(), ())
    return found if kernel is None else tuple(r for r in found if r.kernel == kernel)


def kernel_name(fn: Any) -> str:
    """The @triton.jit function's name under autotune/heuristics wrappers (or the interpreter's)."""
    while hasattr(fn, "fn"):
        fn = fn.fn
    return fn.__name__


def target_arch(device: torch.device) -> int:
    """The compile target whose entries apply to ``device``: sm_90a for Hopper, sm_89 for Ada, else sm_80
    (the nearest target the gate compiles for)."""
    major, minor = torch.cuda.get_device_capability(device)
    return {9: 90, 10: 100}.get(major, 89 if (major, minor) == (8, 9) else 80)


def _split(config: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    kwargs = {k: v for k, v in config.items() if k not in _LAUNCH}
    return kwargs, {k: config[k] for k in _LAUNCH}


def _first_match(kernel: str, facts: Mapping[str, Any], arch: int) -> Spill | None:
    return next((r for r in rules(kernel) if r.matches(facts, arch)), None)


# ----------------------------------------------------------------------------- the autotuner


def prune_configs(kernel: str, kept: list[Any], nargs: Mapping[str, Any], meta: Mapping[str, Any]) -> list[Any]:
    """``kept`` (what the kernel's own prune chose for this launch) without the configs listed for this
    GPU and these inputs; the listed fallbacks where that leaves nothing."""
    tensor = next((v for v in nargs.values() if isinstance(v, torch.Tensor)), None)
    if not rules(kernel) or not kept or tensor is None:
        return kept
    arch, dtype = target_arch(tensor.device), _DTYPES.get(tensor.dtype)
    out, hit = [], []
    for c in kept:
        rule = _first_match(kernel, {**meta, **c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages,
                                     "dtype": dtype}, arch)
        (hit if rule else out).append(rule or c)
    if out:
        return out
    fallbacks = []
    for rule in hit:
        if rule.fallback is not None and rule.fallback not in fallbacks:
            fallbacks.append(rule.fallback)
    if not fallbacks:  # every class that can empty has a fallback (tests): a config that spills beats none
        return kept
    import triton

    return [triton.Config(kw, **launch) for kw, launch in map(_split, fallbacks)]


def pruning(kernel: str, prune: Callable[..., list[Any]] | None) -> Callable[..., list[Any]]:
    """``early_config_prune`` for ``kernel``: ``prune`` (the kernel's own; None keeps every config),
    then :func:`prune_configs`. The kernel's prune stays reachable as ``__wrapped__``."""

    def early_config_prune(configs: list[Any], nargs: dict[str, Any], **meta: Any) -> list[Any]:
        kept = prune(configs, nargs, **meta) if prune is not None else list(configs)
        return prune_configs(kernel, kept, nargs, meta)

    early_config_prune.__wrapped__ = prune
    early_config_prune.kernel = kernel
    return early_config_prune


# ----------------------------------------------------------------------------- the static gate


def variant_facts(v: Any) -> dict[str, Any]:
    dtype = v.tags.get("dtype") or next(t[1:] for t in v.signature.values() if t.startswith("*"))
    return {**v.constexprs, "num_warps": v.num_warps, "num_stages": v.num_stages, "dtype": dtype}


def fallback_for(kernel: str, facts: Mapping[str, Any], arch: int) -> Mapping[str, int] | None:
    """For a launcher with one fixed config (no autotuner): the config the running Triton's entry lists in
    place of the one described by ``facts`` (constexprs, num_warps, num_stages, dtype) on ``arch``."""
    rule = _first_match(kernel, facts, arch)
    return None if rule is None else rule.fallback


def listed(v: Any, arch: int) -> Spill | None:
    """The running Triton's entry for variant ``v`` compiled for ``arch``, if it has one."""
    return _first_match(kernel_name(v.fn), variant_facts(v), arch)


def _compile_identity(v: Any) -> tuple:
    return (kernel_name(v.fn), tuple(sorted(v.signature.items())), tuple(sorted((k, repr(x)) for k, x in
            v.constexprs.items())), v.num_warps, v.num_stages, repr(v.tags.get("divisible_by_16")))


def prune_variants(variants: Iterable[Any]) -> list[Any]:
    """``variants`` with the (variant, target) pairs listed for the running Triton removed, a variant left
    with no target dropped, and each entry's fallback shipped for the targets it replaces: as the same
    compiled form of an existing variant where there is one (that variant gains the target), else as a
    copy of the replaced variant with the fallback config, named ``<replaced>->fallback[...]`` and tagged
    ``fallback_for`` (its other tags describe the replaced variant's inputs). Unchanged where the running
    Triton has no entries."""
    variants = list(variants)
    if not rules():
        return variants
    kept: list[Any] = []
    added: dict[tuple, tuple[Any, list[int]]] = {}  # compile identity -> (variant, targets to add)
    for v in variants:
        archs = []
        for cc in v.archs:
            rule = listed(v, cc)
            if rule is None:
                archs.append(cc)
                continue
            if rule.fallback is None:
                continue
            kwargs, launch = _split(rule.fallback)
            sub = dataclasses.replace(
                v, name=f"{v.name}->fallback[{','.join(f'{k}={x}' for k, x in rule.fallback.items())}]",
                constexprs={**v.constexprs, **kwargs}, **launch, archs=(), tags={**v.tags, "fallback_for": v.name})
            targets = added.setdefault(_compile_identity(sub), (sub, []))[1]
            if cc not in targets:
                targets.append(cc)
        if archs:
            kept.append(v if tuple(archs) == tuple(v.archs) else dataclasses.replace(v, archs=tuple(archs)))
    index = {_compile_identity(v): i for i, v in enumerate(kept)}
    for ident, (sub, targets) in added.items():
        if ident in index:  # an existing variant compiles the same form: ship it for these targets too
            v = kept[index[ident]]
            kept[index[ident]] = dataclasses.replace(v, archs=tuple(sorted({*v.archs, *targets})))
        else:
            kept.append(dataclasses.replace(sub, archs=tuple(sorted(targets))))
    return kept
