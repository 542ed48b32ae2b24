"""kernels/autotune_prune.py: before timing, autotuners drop the configs whose compiled kernel spills or does
not fit the device, keep the least-bad one where all spill, cache the verdict, and stay out of the way
under the interpreter or when switched off.

No GPU here: the compile step (``autotune_prune.compile_config``, or the JIT function's ``run`` for the
end-to-end test) returns fake compiled kernels carrying ``n_spills``, ``n_regs`` and ``metadata.shared``,
and the device is faked as device 0 with 100 KB of shared memory. The tuners are real Triton autotuners
over a real (uncompiled) JIT function, so Triton's own ``Autotuner.run``/``prune_configs`` drive the prune.
One test compiles for real (sm_80, in a subprocess without the interpreter) behind a stand-in driver, so
the Triton APIs the prune reads are checked against the running Triton, the oldest one included.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from triton.runtime.autotuner import Autotuner
from triton.runtime.errors import OutOfResources, PTXASError
from triton.runtime.jit import JITFunction

import tritongpt.kernels
from tritongpt.kernels import autotune_prune as ap
from tritongpt.kernels import compat

pytestmark = pytest.mark.kernel

MAX_SHARED = 100_000
BLOCKS = (16, 32, 64, 128)


def _toy_kernel(X, N, BLOCK: tl.constexpr, EVEN: tl.constexpr):  # never compiled: its signature is what counts
    pass


class FakeKernel:
    """What ``read_facts`` reads from a ``CompiledKernel``; ``loads=False`` makes loading raise as
    Triton's loader does for a kernel that does not fit."""

    def __init__(self, spills: int = 0, shared: int = 1024, regs: int = 128, loads: bool = True) -> None:
        self.n_spills, self.n_regs, self.loads = spills, regs, loads
        self.metadata = types.SimpleNamespace(shared=shared)

    @property
    def run(self):
        if not self.loads:
            raise OutOfResources(70_000, 65_536, "threads")
        return lambda *args: None


@pytest.fixture
def gpu(monkeypatch):
    """A process that looks like a GPU run to the prune: no interpreter, switch unset, device 0."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(ap.ENV_SWITCH, raising=False)
    monkeypatch.setattr(ap, "current_device", lambda: 0)
    monkeypatch.setattr(ap, "max_shared_memory", lambda device: MAX_SHARED)


@pytest.fixture
def compiles(monkeypatch):
    """``compiles(facts)``: the compile step returns ``facts[BLOCK]`` (a FakeKernel, or an exception to
    raise); the list it returns records each compiled BLOCK."""

    def install(facts):
        seen = []

        def compile_config(tuner, config, kwargs):
            seen.append(config.kwargs["BLOCK"])
            got = facts.get(config.kwargs["BLOCK"], FakeKernel())
            if isinstance(got, Exception):
                raise got
            return got

        monkeypatch.setattr(ap, "compile_config", compile_config)
        return seen

    return install


def _tuner(own=None, do_bench=None):
    """A real autotuner over the toy kernel (with a heuristic, as the fused-linear kernels have), the
    compiled-facts prune attached. ``own`` is the kernel's early_config_prune."""
    jit = JITFunction(_toy_kernel)
    tuned = triton.heuristics({"EVEN": lambda a: a["N"] % a["BLOCK"] == 0})(jit)
    by = {"early_config_prune": own} if own else None
    tuner = compat._original_autotune(
        configs=[triton.Config({"BLOCK": b}, num_warps=4) for b in BLOCKS], key=["N"], prune_configs_by=by,
        do_bench=do_bench or (lambda call, quantiles: [1.0] * 3))(tuned)
    return ap.attach(tuner), jit


def _prune(tuner, n=256, x=None):
    """What ``Autotuner.run`` does before timing: set the arguments, then prune."""
    x = torch.empty(64, dtype=torch.float16) if x is None else x
    tuner.nargs = {"X": x, "N": n}
    return [c.kwargs["BLOCK"] for c in tuner.prune_configs({"grid": (1,), "warmup": False})]


# ----------------------------------------------------------------------------- the verdicts


def test_spilling_configs_are_dropped(gpu, compiles):
    compiled = compiles({32: FakeKernel(spills=6), 128: FakeKernel(spills=2)})
    tuner, _ = _tuner()
    assert _prune(tuner) == [16, 64]
    assert compiled == list(BLOCKS)


def test_configs_that_do_not_fit_are_dropped(gpu, compiles):
    """Over the device's shared memory, refused by the loader, or failing to compile as the autotuner
    tolerates (it would time them as infinitely slow): never timed."""
    compiles({16: FakeKernel(shared=MAX_SHARED + 1), 32: FakeKernel(loads=False), 64: PTXASError("ptxas")})
    tuner, _ = _tuner()
    assert _prune(tuner) == [128]


def test_all_spilling_keeps_the_least_bad_and_warns_once(gpu, compiles):
    compiles({16: FakeKernel(spills=8), 32: FakeKernel(spills=2), 64: FakeKernel(shared=MAX_SHARED * 2),
              128: FakeKernel(spills=2)})
    tuner, _ = _tuner()
    with pytest.warns(RuntimeWarning, match=r"_toy_kernel: every candidate config spills.*BLOCK: 32.*8 B spilled"):
        assert _prune(tuner) == [32]  # 64 spills nothing but does not fit; 32 and 128 tie: the first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _prune(tuner, n=512) == [32]


def test_nothing_fits_leaves_the_list_to_triton(gpu, compiles):
    compiles({b: FakeKernel(shared=MAX_SHARED + b) for b in BLOCKS})
    tuner, _ = _tuner()
    with pytest.warns(RuntimeWarning, match="_toy_kernel: no candidate config fits"):
        assert _prune(tuner) == list(BLOCKS)


def test_unreadable_facts_keep_the_config_and_warn(gpu, compiles):
    """A Triton whose compiled kernels lack these attributes: time as Triton would, and say so once."""
    compiles({32: AttributeError("no n_spills"), 64: FakeKernel(spills=1)})
    tuner, _ = _tuner()
    with pytest.warns(RuntimeWarning, match="_toy_kernel: could not read compiled facts"):
        assert _prune(tuner) == [16, 32, 128]


# ----------------------------------------------------------------------------- cost and scope


def test_verdict_is_cached_per_specialization(gpu, compiles):
    """Compiled once per config for launches Triton compiles alike (other tensors, other sizes divisible by
    16 whose heuristics agree); again where the specialization differs."""
    compiled = compiles({64: FakeKernel(spills=4)})
    tuner, _ = _tuner()
    assert _prune(tuner, n=256) == [16, 32, 128]
    assert _prune(tuner, n=512, x=torch.empty(128, dtype=torch.float16)) == [16, 32, 128]
    assert compiled == list(BLOCKS)
    _prune(tuner, n=48)  # EVEN differs for BLOCK 32, 64 and 128; BLOCK 16 compiles alike
    assert compiled[len(BLOCKS):] == [32, 64, 128]
    _prune(tuner, n=256, x=torch.empty(64, dtype=torch.float32))  # another dtype: every config again
    assert len(compiled) == 3 + 2 * len(BLOCKS)


def test_specialization_follows_triton(gpu):
    """The key separates what Triton compiles apart: pointer alignment, dtype, an int being 1 or
    divisible by 16, constexpr values; a kind of argument it does not model is not cached at all."""
    tuner, _ = _tuner()
    config = tuner.configs[0]

    def key(x, n):
        tuner.nargs = {"X": x, "N": n}
        return ap.specialization(tuner, config, {"grid": (1,), "warmup": False})

    buf = torch.empty(64, dtype=torch.float16)
    assert key(buf, 256) == key(buf[8:], 512)  # both 16-byte aligned, both divisible by 16
    assert key(buf, 256) != key(buf[1:], 256)  # misaligned
    assert key(buf, 1) != key(buf, 17)  # 1 is specialized
    assert key(buf, 17) == key(buf, 19) != key(buf, 32)
    assert key(object(), 256) is None
    assert ap.value_key(64, exact=True) != ap.value_key(128, exact=True)


def test_switched_off_by_the_environment(gpu, compiles, monkeypatch):
    compiled = compiles({16: FakeKernel(spills=1)})
    tuner, _ = _tuner()
    for off in ("0", "false", "off"):
        monkeypatch.setenv(ap.ENV_SWITCH, off)
        assert _prune(tuner) == list(BLOCKS)
    assert compiled == []
    monkeypatch.setenv(ap.ENV_SWITCH, "1")
    assert _prune(tuner) == [32, 64, 128]


def test_inactive_under_the_interpreter(gpu, compiles, monkeypatch):
    compiled = compiles({16: FakeKernel(spills=1)})
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    tuner, _ = _tuner()
    assert _prune(tuner) == list(BLOCKS)
    assert compiled == []


def test_runs_after_the_kernels_own_prune_keeping_its_order_and_the_key(gpu, compiles):
    """The kernel's early_config_prune runs first and untouched; its order survives; a single survivor is
    not compiled here (nothing to choose); the tuner's key and prune hook stay the kernel's."""

    def own(configs, nargs, **meta):
        return [c for c in reversed(configs) if c.kwargs["BLOCK"] != 32]

    compiled = compiles({64: FakeKernel(spills=3)})
    tuner, _ = _tuner(own)
    assert tuner.keys == ["N"] and tuner.early_config_prune is own
    assert _prune(tuner) == [128, 16]
    assert compiled == [128, 64, 16]
    single, _ = _tuner(lambda configs, nargs, **meta: configs[2:3])
    compiled.clear()
    assert _prune(single) == [64] and compiled == []
    assert ap.attach(tuner) is tuner and tuner.prune_configs.__wrapped__.__self__ is tuner  # attached once


def test_a_tuning_run_times_only_clean_configs(gpu):
    """End to end through Triton's own Autotuner.run: the JIT function's run (faked) compiles each
    candidate with warmup=True; only the clean ones are then timed, and the launch uses one of them."""
    calls = []
    facts = {16: FakeKernel(spills=5), 32: FakeKernel(), 64: FakeKernel(shared=MAX_SHARED + 1), 128: FakeKernel()}

    def timed(call, quantiles):
        call()
        return [1.0 / calls[-1][1]] * 3  # bigger blocks time faster

    tuner, jit = _tuner(do_bench=timed)

    def run(*args, grid, warmup, **kwargs):
        calls.append(("compile" if warmup else "launch", kwargs["BLOCK"], kwargs["EVEN"]))
        return facts[kwargs["BLOCK"]]

    jit.run = run
    tuner[(1,)](torch.empty(64, dtype=torch.float16), 256)
    assert [c for c in calls if c[0] == "compile"] == [("compile", b, True) for b in BLOCKS]
    launches = [c[1] for c in calls if c[0] == "launch"]
    assert launches[:-1] == [32, 128] and launches[-1] == 128  # timed 32 and 128, launched the faster


# ----------------------------------------------------------------------------- the wiring


def _package_autotuners() -> dict[str, Autotuner]:
    found = {}
    for info in pkgutil.iter_modules(tritongpt.kernels.__path__):
        module = importlib.import_module(f"tritongpt.kernels.{info.name}")
        found.update({f"{info.name}.{name}": obj for name, obj in vars(module).items() if isinstance(obj, Autotuner)})
    return found


def test_every_autotuner_of_the_package_prunes_from_compiled_facts():
    """Each module-level autotuner in tritongpt.kernels went through compat.autotune and has the prune,
    after the kernel's own early_config_prune (kept as the tuner's hook, with the spill table's wrapper
    where this Triton has entries)."""
    tuners = _package_autotuners()
    assert {"flash_attention._attn_fwd_tuned", "flash_attention_bwd._dkdv_tuned", "flash_attention_bwd._dq_tuned",
            "fused_linear._fwd_tuned", "fused_linear_bwd._dx_tuned", "fused_linear_bwd._dw_tuned"} <= set(tuners)
    assert triton.autotune is compat.autotune
    for name, tuner in tuners.items():
        assert ap.is_attached(tuner), name
        assert tuner.prune_configs.__wrapped__ == Autotuner.prune_configs.__get__(tuner), name
        assert tuner.early_config_prune is not None, name


def test_other_libraries_autotuners_are_left_alone():
    tuner = compat.autotune(configs=[triton.Config({"BLOCK": 16})], key=["N"],
                             do_bench=lambda call, quantiles: [1.0] * 3)(JITFunction(_toy_kernel))
    assert not ap.is_attached(tuner)


# ----------------------------------------------------------------------------- the real compiler


_DRIVE = r"""
import json, os, re, subprocess, sys
import torch, triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver

CUOBJDUMP = sys.argv[1]


def load_binary(name, cubin, shared, device):  # what the CUDA driver reports, read off the cubin instead
    path = os.path.join(os.environ["TMPDIR"], name + ".cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    usage = subprocess.run([CUOBJDUMP, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    regs, stack = (int(re.search(k + r":(\d+)", usage).group(1)) for k in ("REG", "STACK"))
    return (0, 0, regs, stack // 4, 1024)[:4 if triton.__version__.startswith("3.3.") else 5]


class Driver:  # an A100 as far as Triton's JIT, loader and autotuner ask
    class utils:
        get_device_properties = staticmethod(lambda device: {"max_shared_mem": 166912, "warpSize": 32})
        load_binary = staticmethod(load_binary)
    launcher_cls = staticmethod(lambda src, metadata: lambda *args: None)
    get_current_device = staticmethod(lambda: 0)
    get_current_stream = staticmethod(lambda device=None: 0)
    get_current_target = staticmethod(lambda: GPUTarget("cuda", 80, 32))
    get_active_torch_device = staticmethod(lambda: torch.device("cpu"))
    get_benchmarker = staticmethod(lambda: lambda call, quantiles=None: (call(), [1.0] * 3)[1])


@triton.jit
def toy_kernel(X, Y, N, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(X + offs, mask=offs < N, other=0.0)
    s = tl.sum(x * x, axis=0)  # every x stays live across the reduction: 8192 per warp spill
    tl.store(Y + offs, x / s, mask=offs < N)


driver.set_active(Driver())
from tritongpt.kernels import autotune_prune

configs = [triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((8192, 1), (1024, 1), (8192, 8))]
tuner = autotune_prune.attach(triton.autotune(configs=configs, key=["N"])(toy_kernel))
run, launched = toy_kernel.run, []


def counted(*args, warmup, **kwargs):
    if not warmup:
        launched.append([kwargs["BLOCK"], kwargs["num_warps"]])
    return run(*args, warmup=warmup, **kwargs)


toy_kernel.run = counted
x = torch.randn(1000)
tuner[(1,)](x, torch.empty_like(x), 1000)
print(json.dumps({"facts": sorted([f.spills, f.regs, f.fits] for f in tuner.prune_configs.verdicts.values()),
                  "launched": launched}))
"""


@pytest.mark.skipif(os.environ.get("TRITONGPT_SKIP_AOT") == "1", reason="AOT checks disabled")
def test_prunes_a_config_the_compiler_spills_on(tmp_path):
    """Triton's own JIT, compiler and autotuner (no interpreter), with a stand-in driver for an A100 that
    reads registers and stack from the real cubin: a 8192-element fp32 tile on one warp spills (255
    registers + stack) and is never timed; the other two configs are timed and one of them launched."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        pytest.skip("this Triton ships no cuobjdump")
    script = tmp_path / "drive.py"
    script.write_text(textwrap.dedent(_DRIVE))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script), str(cuobjdump)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    (clean_a, clean_b, spilled) = out["facts"]
    assert clean_a[0] == clean_b[0] == 0 and spilled[0] > 0 and spilled[1] == 255 and spilled[2]
    assert out["launched"][:2] == [[1024, 1], [8192, 8]] and out["launched"][2] in out["launched"][:2]


def test_compile_runs_the_configs_pre_hook_first():
    """A config's pre_hook (the TMA kernels set their descriptors' boxes there) runs before the compile, with
    the launch's and the config's values, as Triton's autotuner runs it before timing."""
    calls = []

    class Fn:
        def run(self, *args, **kwargs):
            calls.append(("run", kwargs["BLOCK"], kwargs["warmup"]))
            return "compiled"

    tuner = types.SimpleNamespace(fn=Fn(), nargs={"X": "x", "N": 7})
    config = triton.Config({"BLOCK": 64}, pre_hook=lambda nargs: calls.append(("hook", nargs["BLOCK"], nargs["N"])))
    assert ap.compile_config(tuner, config, {"EVEN": True}) == "compiled"
    assert calls == [("hook", 64, 7), ("run", 64, True)]


def test_descriptor_arguments_are_cached_by_dtype_and_alignment():
    pytest.importorskip("triton.tools.tensor_descriptor", reason="tensor descriptors need Triton >= 3.4")
    from tritongpt.kernels.tma import make_descriptor

    t = torch.zeros(64, 64, dtype=torch.float16)
    a, b = make_descriptor(t, [32, 32]), make_descriptor(t, [64, 16])
    assert ap.value_key(a, exact=False) == ap.value_key(b, exact=False) is not None
    assert ap.value_key(a, exact=False) != ap.value_key(make_descriptor(t.float(), [32, 32]), exact=False)


def test_a_mistyped_switch_warns_and_keeps_the_prune_on(monkeypatch):
    monkeypatch.setattr(ap, "interpreter_enabled", lambda: False)
    monkeypatch.setenv(ap.ENV_SWITCH, "of")
    with pytest.warns(UserWarning, match="expected 0 or 1"):
        assert ap.enabled()
    monkeypatch.setenv(ap.ENV_SWITCH, "0")
    assert not ap.enabled()

