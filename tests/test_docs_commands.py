"""Every command in README.md and docs/*.md works as written.

Shell commands come from ```bash / ```sh / ```shell / ```console fences. A command whose comment starts
with ``needs:`` (``# needs: a CUDA GPU``, ``# needs: torchrun, 8 GPUs``, ``# needs: user files (...)``)
gets an argument check only: the ``tritongpt`` parser, torchrun's own parser, a Makefile target, a pip
extra. Every other command must match a rule of RUN_RULES, which says how it is shrunk (fewer steps,
fewer tokens, fewer kernels), and runs in-process through ``tritongpt.engine.cli.main`` in a scratch
folder that holds what a fresh checkout has at the paths the docs use (configs/). A command that is
neither marked nor matched fails, so a new documented command cannot go untested.

Python fences run with the rewrites and stand-in files below (a fence with a ``# needs:`` line only
compiles), and the kernel signatures in ``### `name(...)` `` headings must match the code.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tritongpt.engine import assets
from tritongpt.engine.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
# What a fresh checkout provides at the paths the docs name; linked into the scratch folder.
CHECKOUT_PATHS = ("configs",)


@contextlib.contextmanager
def one_torch_thread():
    """The reduced runs are tiny ops; on a shared 2-core machine torch's worker threads spin-wait on each
    other and make them 10x slower than one thread does."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------------
# Markdown: fences, commands, markers


@dataclass(frozen=True)
class Fence:
    doc: str
    line: int  # 1-based line of the opening fence
    lang: str
    body: list[str]


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # as written, continuation lines joined
    argv: tuple[str, ...]
    needs: str | None  # the text after "# needs:", or None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def fences(path: Path) -> list[Fence]:
    out, lines, i = [], path.read_text(encoding="utf-8").splitlines(), 0
    rel = path.relative_to(REPO).as_posix()
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, mark, info = m.groups()
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(mark)}\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        out.append(Fence(rel, start + 1, info.strip().split(" ")[0].lower() if info.strip() else "", body))
        i += 1
    return out


def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) at the first unquoted ``#`` that starts a word, as the shell reads it."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
            elif ch == "\\" and quote == '"':
                continue
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def commands(fence: Fence) -> list[Command]:
    out: list[Command] = []
    pending: list[str] = []
    first = 0
    for n, raw in enumerate(fence.body, fence.line + 1):
        line = raw.rstrip()
        if not pending:
            if fence.lang == "console":
                if not line.startswith("$ "):
                    continue  # output shown in the docs
                line = line[2:]
            first = n
        elif fence.lang == "console" and line.startswith("> "):
            line = line[2:]
        pending.append(line[:-1] if line.endswith("\\") else line)
        if line.endswith("\\"):
            continue
        text = " ".join(p.strip() for p in pending).strip()
        pending = []
        code, comment = split_comment(text)
        if not code:
            continue  # a comment line
        needs = comment[len("needs:"):].strip() if comment.startswith("needs:") else None
        out.append(Command(fence.doc, first, text, tuple(shlex.split(code)), needs))
    assert not pending, f"{fence.doc}:{fence.line}: the block ends inside a line continuation"
    return out


def all_fences() -> list[Fence]:
    return [f for doc in DOCS for f in fences(doc)]


def all_commands() -> list[Command]:
    return [c for f in all_fences() if f.lang in SHELL_LANGS for c in commands(f)]


def shell_operators(code: str) -> list[str]:
    lex = shlex.shlex(code, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return [t for t in lex if t and set(t) <= set("();<>|&")]


# ---------------------------------------------------------------------------------------------------------
# Runnable commands: the explicit reduction table


def set_option(argv: list[str], flag: str, value: str) -> list[str]:
    """``flag value`` replaced where the command has it, appended where it does not."""
    out, i, found = [], 0, False
    while i < len(argv):
        if argv[i] == flag:
            out += [flag, value]
            i += 2
            found = True
        elif argv[i].startswith(flag + "="):
            out.append(f"{flag}={value}")
            i += 1
            found = True
        else:
            out.append(argv[i])
            i += 1
    return out if found else out + [flag, value]


def add_flag(argv: list[str], flag: str) -> list[str]:
    return argv if flag in argv else argv + [flag]


def drop_flag(argv: list[str], flag: str) -> list[str]:
    return [a for a in argv if a != flag]


def as_written(argv: list[str]) -> list[str]:
    return argv


TRAIN_SMALL = ["train.max_iters=2", "train.eval_interval=2", "train.eval_iters=1", "train.sample_tokens=4"]


def reduce_train(argv: list[str]) -> list[str]:
    for s in TRAIN_SMALL:  # appended last, so they win over the command's own --set of the same key
        argv = argv + ["--set", s]
    return argv


def newest_checkpoint(argv: list[str]) -> list[str]:
    """A documented ``.../checkpoints/step_N`` is the full run's last step; the reduced run stops
    earlier, so the same run's newest checkpoint stands in."""
    if "--checkpoint" not in argv:
        return argv
    i = argv.index("--checkpoint") + 1
    m = re.fullmatch(r"(.*/checkpoints)/step_\d+/?", argv[i])
    steps = sorted(Path(m.group(1)).glob("step_*")) if m else []
    if steps:
        argv = argv[:i] + [steps[-1].as_posix()] + argv[i + 1:]
    return argv


def reduce_generate(argv: list[str]) -> list[str]:
    return set_option(newest_checkpoint(argv), "--max-new-tokens", "4")


def reduce_bench_generate(argv: list[str]) -> list[str]:
    if not {"--checkpoint", "--hf-dir"} & set(argv):
        argv = set_option(argv, "--preset", "tiny")
    for flag, value in (("--batch", "1"), ("--prompt-len", "4"), ("--new-tokens", "4"), ("--repeats", "1")):
        argv = set_option(argv, flag, value)
    return drop_flag(add_flag(argv, "--no-hf"), "--compile")


def reduce_inspect(argv: list[str]) -> list[str]:
    argv = set_option(set_option(argv, "--kernel", "layer_norm_fwd["), "--targets", "sm_80")
    return drop_flag(set_option(add_flag(argv, "--quick"), "--jobs", "1"), "--traffic")


@dataclass(frozen=True)
class Rule:
    prefix: tuple[str, ...]
    how: str  # what the reduction keeps and drops, for the failure message
    rewrite: Callable[[list[str]], list[str]]
    stage: int = 2  # run order across all docs: data (0) before training (1) before its users (2)


RUN_RULES = (
    Rule(("tritongpt", "prepare"), "as written (the whole Shakespeare corpus: ~2 s)", as_written, stage=0),
    Rule(("tritongpt", "train"), "2 steps, one eval window, 4 sample tokens", reduce_train, stage=1),
    Rule(("tritongpt", "generate"), "4 new tokens; a step_N checkpoint -> that run's newest", reduce_generate),
    Rule(("tritongpt", "bench", "generate"), "tiny preset, batch 1, 4 + 4 tokens, one repeat, no Hugging Face",
         reduce_bench_generate),
    Rule(("tritongpt", "inspect"), "3 LayerNorm-forward variants on sm_80, one process, no --traffic "
         "(24 s on the interpreter; `make test` runs the traffic gate itself)", reduce_inspect),
    Rule(("tritongpt", "bench", "train"), "as written (CPU, torch backend: a few seconds)", as_written),
    Rule(("tritongpt", "info"), "as written", as_written),
    Rule(("tritongpt", "presets"), "as written", as_written),
    Rule(("tritongpt", "assets"), "as written (cached by `make test`'s `tritongpt assets`)", as_written),
)


def rule_for(cmd: Command) -> Rule | None:
    matches = [r for r in RUN_RULES if cmd.argv[:len(r.prefix)] == r.prefix]
    return max(matches, key=lambda r: len(r.prefix), default=None)


def classify(cmd: Command) -> str:
    """'parse' (marked), 'run' (a rule matches), or why it can be neither."""
    code, _ = split_comment(cmd.text)
    if shell_operators(code) or "$" in code or "`" in code:
        return "one plain command per line: no pipes, redirections, ';', '&&', '$VAR' or '$(...)'"
    if cmd.needs is not None:
        return "parse" if cmd.needs else "'# needs:' names nothing"
    if rule_for(cmd) is None:
        return ("no rule in RUN_RULES runs it and it has no '# needs: ...' marker: add a reduction rule, or "
                "mark what it needs (a GPU, several processes, user files)")
    return "run"


# ---------------------------------------------------------------------------------------------------------
# Marked commands: argument checks


def parse_tritongpt(args: list[str]) -> None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(args)
    except SystemExit as e:
        raise AssertionError(f"tritongpt {shlex.join(args)}: arguments rejected: {err.getvalue().strip()}") from e


def makefile_targets() -> set[str]:
    out = set()
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?![:=])", line)
        if m:
            out.update(t for t in m.group(1).split() if not t.startswith("."))
    return out


def check_torchrun(args: list[str]) -> None:
    from torch.distributed.run import get_args_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = get_args_parser().parse_args(args)
    except SystemExit as e:
        raise AssertionError(f"torchrun {shlex.join(args)}: rejected: {err.getvalue().strip()}") from e
    assert ns.module and ns.training_script == "tritongpt", "torchrun runs the package: `torchrun ... -m tritongpt`"
    parse_tritongpt(list(ns.training_script_args))


def check_pip(args: list[str]) -> None:
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("optional-dependencies", {}))
    for a in args:
        m = re.fullmatch(r"\.\[([\w,-]+)\]", a)
        if m:
            missing = set(m.group(1).split(",")) - extras
            assert not missing, f"pip extra(s) {sorted(missing)} not in pyproject.toml (has {sorted(extras)})"


def parse_check(cmd: Command) -> None:
    argv = list(cmd.argv)
    prog = Path(argv[0]).name
    if prog == "tritongpt":
        parse_tritongpt(argv[1:])
    elif prog.startswith("python") and argv[1:3] == ["-m", "tritongpt"]:
        parse_tritongpt(argv[3:])
    elif prog == "torchrun":
        check_torchrun(argv[1:])
    elif prog == "make":
        targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        missing = set(targets) - makefile_targets()
        assert not missing, f"Makefile has no target(s) {sorted(missing)}"
    elif prog in ("pip", "pip3") or (prog.startswith("python") and argv[1:3] == ["-m", "pip"]):
        check_pip(argv[1:])
    elif prog == "git":
        pass  # clone/checkout of a remote: nothing to check offline
    else:
        raise AssertionError(f"no argument check for {prog!r}: add one to parse_check")


# ---------------------------------------------------------------------------------------------------------
# Tests: shell commands

COMMANDS = all_commands()
MARKED = [c for c in COMMANDS if classify(c) == "parse"]
RUNNABLE = sorted((c for c in COMMANDS if classify(c) == "run"), key=lambda c: rule_for(c).stage)


def test_docs_have_commands_and_every_fence_a_language():
    assert COMMANDS, "no shell commands found in README.md / docs/"
    bare = [f"{f.doc}:{f.line}" for f in all_fences() if not f.lang]
    assert not bare, f"fences without a language (bash/console for commands, text for listings): {bare}"


def test_every_command_is_run_or_marked():
    bad = [f"{c.id}: {c.text}\n    -> {classify(c)}" for c in COMMANDS if classify(c) not in ("run", "parse")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("cmd", MARKED, ids=[c.id for c in MARKED])
def test_marked_command_parses(cmd):
    parse_check(cmd)


@dataclass
class Ran:
    work: Path  # the scratch checkout the commands ran in
    results: dict[str, tuple[list[str], int, str]]  # command id -> (argv as run, exit code, output)


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Ran:
    """Run every runnable command once, in stage order, in one scratch checkout."""
    try:
        assets.fetch_shakespeare(quiet=True)
    except assets.AssetError as e:  # pragma: no cover - offline without the cached corpus
        pytest.skip(f"Shakespeare corpus unavailable: {e}")
    work = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT_PATHS:
        (work / name).symlink_to(REPO / name, target_is_directory=(REPO / name).is_dir())
    results = {}
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.chdir(work)
        for cmd in RUNNABLE:
            argv = rule_for(cmd).rewrite(list(cmd.argv))
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                try:
                    code = main(argv[1:])
                except SystemExit as e:  # argparse rejects the arguments
                    code = e.code if isinstance(e.code, int) else 2
            results[cmd.id] = (argv, code, buf.getvalue())
    return Ran(work, results)


@pytest.mark.parametrize("cmd", RUNNABLE, ids=[c.id for c in RUNNABLE])
def test_runnable_command_works(cmd, ran):
    argv, code, output = ran.results[cmd.id]
    assert code == 0, (f"{cmd.id}: {cmd.text}\nran as ({rule_for(cmd).how}): {shlex.join(argv)}\nexit {code}; "
                       f"output tail:\n{output[-3000:]}")


def test_documented_training_sequence_produces_a_run(ran):
    """The first documented training run writes what the Outputs paragraph promises, and a documented
    generate command reads one of its checkpoints."""
    trains = [c for c in RUNNABLE if c.argv[:2] == ("tritongpt", "train") and "--resume" not in c.argv]
    assert trains, "the docs show no training command"
    out = ran.work / trains[0].argv[trains[0].argv.index("--out") + 1]
    assert (out / "metrics.jsonl").is_file() and (out / "loss.png").is_file()
    assert sorted((out / "checkpoints").glob("step_*")), f"{out}: no checkpoint"
    readers = [ran.results[c.id][0] for c in RUNNABLE if c.argv[:2] == ("tritongpt", "generate")]
    assert any(Path(a[a.index("--checkpoint") + 1]).parent == out.relative_to(ran.work) / "checkpoints"
               for a in readers if "--checkpoint" in a), "no documented generate command reads the trained run"


# ---------------------------------------------------------------------------------------------------------
# Python snippets and kernel signatures

# The 124M preset takes ~4 s to initialise on 2 cores; the tiny preset exercises the same call.
PY_REWRITES = {'GPT.from_preset("gpt2")': 'GPT.from_preset("tiny")'}
GPT2_STAND_IN = "path/to/gpt2"  # a user's GPT-2 folder: a small checkpoint with GPT-2's vocabulary


def python_fences() -> list[Fence]:
    return [f for f in all_fences() if f.lang in ("python", "py")]


def needs_marked(fence: Fence) -> bool:
    return any(re.search(r"#\s*needs:", line) for line in fence.body)


PY_FENCES = python_fences()
PY_RUNNABLE = [f for f in PY_FENCES if not needs_marked(f)]


@pytest.mark.parametrize("fence", PY_FENCES, ids=[f"{f.doc}:{f.line}" for f in PY_FENCES])
def test_python_snippet_compiles(fence):
    compile("\n".join(fence.body), f"{fence.doc}:{fence.line}", "exec")


@pytest.mark.parametrize("fence", PY_RUNNABLE, ids=[f"{f.doc}:{f.line}" for f in PY_RUNNABLE])
def test_python_snippet_runs(fence, tmp_path, monkeypatch):
    from tritongpt.engine import GPT, GPTConfig

    source = "\n".join(fence.body)
    for old, new in PY_REWRITES.items():
        source = source.replace(old, new)
    if "GPT2Tokenizer" in source:
        try:
            assets.fetch_gpt2_ranks(quiet=True)
        except assets.AssetError as e:  # pragma: no cover - offline without the cached ranks
            pytest.skip(f"GPT-2 BPE ranks unavailable: {e}")
    monkeypatch.chdir(tmp_path)
    if GPT2_STAND_IN in source:
        GPT(GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=32)).save(GPT2_STAND_IN)
    with one_torch_thread():
        exec(compile(source, f"{fence.doc}:{fence.line}", "exec"), {"__name__": "__docs__"})


def kernel_headings() -> list[tuple[str, str, str]]:
    """(where, name, parameter text) for each `name(...)` in a '### ' heading naming a shipped kernel."""
    import tritongpt.kernels as k

    out = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("### "):
                for name, params in re.findall(r"`(\w+)\(([^`]*)\)`", line):
                    if name in k.__all__:
                        out.append((f"{doc.relative_to(REPO).as_posix()}:{n}", name, params))
    return out


def test_documented_kernel_signatures_match_the_code():
    import tritongpt.kernels as k

    found = kernel_headings()
    assert {name for _, name, _ in found} == set(k.__all__), "every shipped kernel has a '### `name(...)`' heading"
    for where, name, params in found:
        fn = ast.parse(f"def f({params}): pass").body[0].args
        pos = fn.posonlyargs + fn.args
        defaults = [None] * (len(pos) - len(fn.defaults)) + fn.defaults + fn.kw_defaults
        doc = [(a.arg, "kw" if a in fn.kwonlyargs else "pos", d)
               for a, d in zip(pos + fn.kwonlyargs, defaults, strict=True)]
        code = inspect.signature(getattr(k, name)).parameters.values()
        assert [(a, kind) for a, kind, _ in doc] == [
            (p.name, "kw" if p.kind is p.KEYWORD_ONLY else "pos") for p in code], f"{where}: {name} parameters"
        for (a, _, d), p in zip(doc, code, strict=True):
            want = inspect.Parameter.empty if d is None else ast.literal_eval(d)
            assert want == p.default, f"{where}: {name}({a}=...) documents {want!r}, the code has {p.default!r}"


def test_rewrite_helpers():
    assert set_option(["x", "--n", "5"], "--n", "1") == ["x", "--n", "1"]
    assert set_option(["x", "--n=5"], "--n", "1") == ["x", "--n=1"]
    assert set_option(["x"], "--n", "1") == ["x", "--n", "1"]
    assert split_comment('a "#b" c  # needs: gpu') == ('a "#b" c', "needs: gpu")
    assert shell_operators("a | b") == ["|"] and not shell_operators('a --stop "<|endoftext|>"')
    fence = Fence("x.md", 1, "console", ["$ tritongpt train \\", ">   --config c.toml  # needs: x", "output"])
    (c,) = commands(fence)
    assert c.argv == ("tritongpt", "train", "--config", "c.toml") and c.needs == "x" and c.line == 2


# ---------------------------------------------------------------------------------------------------------
# Links and size: the README is the entry page, docs/ holds the detail

README_MAX_BYTES = 12_288  # a newcomer finds the two commands and the tables on one screenful of scrolling
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation but '-' and '_' dropped, spaces -> '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, outside fences; a repeated heading gets GitHub's -1, -2 suffixes."""
    out: set[str] = set()
    in_fence = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m:
            in_fence = None if in_fence and m.group(1).startswith(in_fence) else (in_fence or m.group(1))
            continue
        if in_fence is None and (h := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            slug, n = github_slug(h.group(1)), 0
            while (slug if n == 0 else f"{slug}-{n}") in out:
                n += 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of each markdown link outside fences that is not a web or mail address."""
    out, in_fence = [], None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m:
            in_fence = None if in_fence and m.group(1).startswith(in_fence) else (in_fence or m.group(1))
            continue
        if in_fence is None:
            code_free = re.sub(r"`[^`]*`", "", line)  # `[x](y)` inside inline code is not a link
            out += [(n, t) for t in LINK.findall(code_free) if not re.match(r"^(https?:|mailto:)", t)]
    return out


def test_readme_is_short():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (at most {README_MAX_BYTES}): move detail to docs/"


def test_relative_links_resolve():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    bad = []
    for page in pages:
        links = relative_links(page)
        for line, target in links:
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            where = f"{page.relative_to(REPO).as_posix()}:{line}: {target}"
            if not dest.exists():
                bad.append(f"{where}: no file {dest}")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                bad.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    assert not bad, "\n".join(bad)


def test_link_helpers():
    assert github_slug("Results: `bench/results/`, history, plots, `tritongpt bench report`") == (
        "results-benchresults-history-plots-tritongpt-bench-report")
    assert github_slug("Serving: an OpenAI-compatible server") == "serving-an-openai-compatible-server"
    assert github_slug("make_targets & more") == "make_targets--more"
