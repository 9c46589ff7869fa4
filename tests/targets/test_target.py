"""`lepton_compiler.targets.target`: parsing, canonical text, dict forms, TVM dicts, host detection.

No hardware needed: host detection is checked for consistency with `/proc/cpuinfo`, so the
tests pass on machines with or without AVX-512 and AMX.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_compiler.errors import LeptonError
from lepton_compiler.targets.target import (
    FEATURES,
    Target,
    detect_target,
    host_target,
    parse_target,
)

ROOT = Path(__file__).resolve().parents[2]
AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
AMX = {"amx-tile", "amx-int8", "amx-bf16"}

# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "arch"),
    [
        ("x86", "x86_64"),
        ("x86_64", "x86_64"),
        ("x86-64", "x86_64"),
        ("x64", "x86_64"),
        ("amd64", "x86_64"),
        ("arm", "aarch64"),
        ("arm64", "aarch64"),
        ("aarch64", "aarch64"),
        ("X86_64", "x86_64"),
        (" arm64 ", "aarch64"),
    ],
)
def test_arch_aliases(alias: str, arch: str) -> None:
    t = parse_target(alias)
    assert t.arch == arch
    assert t.cpu is None and t.sm is None
    assert t.threads == len(os.sched_getaffinity(0))


def test_cuda_with_sm() -> None:
    for text in ("cuda:sm_80", "cuda:sm80", "cuda:+sm_80", "CUDA: SM_80"):
        t = parse_target(text)
        assert (t.arch, t.sm, t.features, t.vector_bits) == ("cuda", 80, frozenset(), None)
    assert parse_target("cuda:sm_120").sm == 120


def test_bare_architectures_are_baselines() -> None:
    assert parse_target("x86").features == frozenset()
    assert parse_target("arm").features == {"neon"}  # Advanced SIMD is mandatory on ARMv8-A


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x86:avx2", {"avx2", "sse4.2"}),
        ("x86:+avx2,+fma", {"avx2", "fma", "sse4.2"}),
        ("x86:sse4_2", {"sse4.2"}),
        ("x86:sse42", {"sse4.2"}),
        ("x86:avx512f", {"avx512f", "avx2", "fma", "sse4.2"}),
        ("x86:avx512", AVX512 | {"avx2", "fma", "sse4.2"}),
        ("x86:vnni", {"avx512vnni", "avx512f", "avx2", "fma", "sse4.2"}),
        ("x86:avx512_vnni", {"avx512vnni", "avx512f", "avx2", "fma", "sse4.2"}),
        ("x86:avx512,vnni", AVX512 | {"avx512vnni", "avx2", "fma", "sse4.2"}),
        ("x86:avx512_bf16", {"avx512bf16", "avx512bw", "avx512f", "avx2", "fma", "sse4.2"}),
        ("x86:bf16", {"avx512bf16", "avx512bw", "avx512f", "avx2", "fma", "sse4.2"}),
        ("x86:amx", AMX),
        ("x86:amx_int8", {"amx-int8", "amx-tile"}),
        ("x86:+amx-bf16", {"amx-bf16", "amx-tile"}),
        ("x86:amx-tile,amx_tile,amx", AMX),
        ("arm:neon", {"neon"}),
        ("arm:asimd", {"neon"}),
        ("arm:simd", {"neon"}),
        ("arm:dotprod", {"neon", "dotprod"}),
        ("arm:+neon,+dotprod", {"neon", "dotprod"}),
        ("arm:asimddp", {"neon", "dotprod"}),
        ("arm:dot", {"neon", "dotprod"}),
        ("arm:i8mm", {"neon", "i8mm"}),
        ("arm:fp16", {"neon", "fp16"}),
        ("arm:fullfp16", {"neon", "fp16"}),
        ("arm:fphp", {"neon", "fp16"}),
        ("arm:sve", {"neon", "fp16", "sve"}),  # LLVM: sve implies fullfp16
    ],
)
def test_features_aliases_and_implications(text: str, expected: set[str]) -> None:
    assert parse_target(text).features == expected


def test_cpu_and_options() -> None:
    t = parse_target("x86:avx2@cpu=haswell/threads=4")
    assert (t.cpu, t.threads, t.vector_bits) == ("haswell", 4, 256)
    t = parse_target("arm:neon,dotprod@cpu=cortex-a76/threads=8")
    assert (t.arch, t.cpu, t.threads) == ("aarch64", "cortex-a76", 8)
    t = parse_target("arm:sve/vector_bits=512/threads=2")
    assert (t.vector_bits, t.threads, t.lanes(32)) == (512, 2, 16)
    t = parse_target("x86 : AVX2 @ cpu = Haswell / threads = 3")  # spaces and case are ignored
    assert (t.features, t.cpu, t.threads) == ({"avx2", "sse4.2"}, "haswell", 3)


def test_host_forms() -> None:
    host = host_target()
    assert parse_target("host") == host
    assert parse_target("HOST") == host
    t = parse_target("host/threads=3")
    assert (t.arch, t.features, t.threads) == (host.arch, host.features, 3)
    assert parse_target("host@cpu=x86-64").cpu == "x86-64"


def test_default_threads_are_the_usable_cores() -> None:
    assert Target("x86_64").threads == len(os.sched_getaffinity(0))
    assert parse_target("cuda:sm_80").threads == len(os.sched_getaffinity(0))


def test_constructor_normalizes_like_the_parser() -> None:
    t = Target("x86_64", frozenset({"avx512", "+vnni"}), threads=2)
    assert t == parse_target("x86:avx512,vnni/threads=2")
    assert t.vector_bits == 512
    assert Target("aarch64", frozenset(), threads=1).features == {"neon"}


# -- canonical text and dict round trips ----------------------------------------------------------

TEXTS = [
    "host",
    "host/threads=1",
    "x86",
    "x86_64:avx2,fma",
    "x86:avx512",
    "x86:avx512,vnni",
    "x86:avx512,vnni,amx,bf16@cpu=sapphirerapids/threads=2",
    "x86-64:sse4.2@cpu=x86-64-v2",
    "arm",
    "arm:neon,dotprod",
    "arm64:neon,dotprod,i8mm,fp16@cpu=neoverse-n1/threads=4",
    "aarch64:sve",
    "aarch64:sve/vector_bits=256",
    "cuda:sm_80",
    "cuda:sm_90/threads=7",
]


@pytest.mark.parametrize("text", TEXTS)
def test_canonical_text_round_trip(text: str) -> None:
    t = parse_target(text)
    assert parse_target(str(t)) == t
    assert str(t) == t.text
    assert str(parse_target(str(t))) == str(t)


@pytest.mark.parametrize("text", TEXTS)
def test_dict_round_trip(text: str) -> None:
    t = parse_target(text)
    d = json.loads(json.dumps(t.to_dict()))
    back = Target.from_dict(d)
    assert back == t and back.notes == t.notes
    assert Target.from_dict({"text": d["text"]}) == t


def test_canonical_texts() -> None:
    assert str(parse_target("x86/threads=4")) == "x86_64/threads=4"
    assert str(parse_target("x86:+fma,avx2/threads=4")) == "x86_64:sse4.2,avx2,fma/threads=4"
    assert str(parse_target("x86:vnni,avx512/threads=2")) == (
        "x86_64:sse4.2,avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx512vnni/threads=2"
    )
    assert str(parse_target("arm:dotprod@cpu=cortex-a76/threads=1")) == (
        "aarch64:neon,dotprod@cpu=cortex-a76/threads=1"
    )
    assert str(parse_target("arm:sve/threads=1/vector_bits=256")) == (
        "aarch64:neon,fp16,sve/threads=1/vector_bits=256"
    )
    assert str(parse_target("cuda:sm_80/threads=2")) == "cuda:sm_80/threads=2"


def test_to_dict_contents() -> None:
    d = parse_target("x86:avx2,fma@cpu=haswell/threads=4").to_dict()
    assert d == {
        "arch": "x86_64",
        "features": ["sse4.2", "avx2", "fma"],
        "cpu": "haswell",
        "vector_bits": 256,
        "threads": 4,
        "sm": None,
        "text": "x86_64:sse4.2,avx2,fma@cpu=haswell/threads=4",
        "notes": [],
    }


def test_from_dict_errors() -> None:
    good = parse_target("x86:avx2/threads=4").to_dict()
    with pytest.raises(LeptonError, match=r"unknown key\(s\) \['colour'\]"):
        Target.from_dict({**good, "colour": "red"})
    with pytest.raises(LeptonError, match="disagrees"):
        Target.from_dict({**good, "text": "x86_64/threads=4"})
    with pytest.raises(LeptonError, match="needs 'arch'"):
        Target.from_dict({"features": []})
    with pytest.raises(LeptonError, match="list of names"):
        Target.from_dict({**good, "features": "avx2"})
    with pytest.raises(LeptonError, match="unknown feature 'avx9000'"):
        Target.from_dict({"arch": "x86_64", "features": ["avx9000"]})


# -- questions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bits", "lanes32", "lanes8"),
    [
        ("x86", 128, 4, 16),
        ("x86:sse4.2", 128, 4, 16),
        ("x86:avx2", 256, 8, 32),
        ("x86:avx512", 512, 16, 64),
        ("x86:avx512,vnni,amx", 512, 16, 64),
        ("arm:neon,dotprod", 128, 4, 16),
        ("arm:sve", 128, 4, 16),
        ("arm:sve/vector_bits=256", 256, 8, 32),
    ],
)
def test_vector_bits_and_lanes(text: str, bits: int, lanes32: int, lanes8: int) -> None:
    t = parse_target(text)
    assert (t.vector_bits, t.lanes(), t.lanes(32), t.lanes(8)) == (bits, lanes32, lanes32, lanes8)


def test_cuda_has_no_lanes() -> None:
    with pytest.raises(LeptonError, match="no SIMD vector width"):
        parse_target("cuda:sm_80").lanes()


def test_has() -> None:
    t = parse_target("x86:avx512,vnni")
    assert t.has("avx512vnni") and t.has("vnni") and t.has("+avx512_vnni") and t.has("AVX2")
    assert t.has("avx512")  # a group alias needs all its members
    assert not t.has("amx") and not t.has("avx512bf16")
    assert not t.has("neon")  # another architecture's feature
    assert parse_target("x86:avx512f").has("avx512f") and not parse_target("x86:avx512f").has(
        "avx512"
    )
    arm = parse_target("arm:dotprod")
    assert arm.has("neon") and arm.has("asimddp") and not arm.has("i8mm") and not arm.has("avx2")
    cuda = parse_target("cuda:sm_90")
    assert cuda.has("sm_80") and cuda.has("sm_90") and not cuda.has("sm_100")
    assert not t.has("sm_80")
    with pytest.raises(LeptonError, match="unknown target feature 'avx9000'"):
        t.has("avx9000")


def test_is_cpu_is_cuda() -> None:
    assert parse_target("x86").is_cpu and not parse_target("x86").is_cuda
    assert parse_target("arm").is_cpu
    cuda = parse_target("cuda:sm_80")
    assert cuda.is_cuda and not cuda.is_cpu


def test_targets_are_hashable_values() -> None:
    a, b = parse_target("x86:avx2,fma/threads=2"), parse_target("x86_64:+fma,+avx2/threads=2")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != parse_target("x86:avx2,fma/threads=3")


# -- TVM dicts ------------------------------------------------------------------------------------


def x86_dict(mcpu: str, threads: int = 2, **extra: object) -> dict[str, object]:
    return {
        "kind": "llvm",
        "mtriple": "x86_64-linux-gnu",
        "mcpu": mcpu,
        **extra,
        "num-cores": threads,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x86/threads=2", x86_dict("x86-64")),
        ("x86:sse4.2/threads=2", x86_dict("x86-64", mattr=["+sse4.2"])),
        ("x86:avx2,fma/threads=2", x86_dict("haswell")),
        ("x86:avx512/threads=2", x86_dict("skylake-avx512")),
        ("x86:avx512,vnni/threads=4", x86_dict("icelake-server", 4)),
        ("x86:avx512,vnni,bf16/threads=2", x86_dict("icelake-server", mattr=["+avx512bf16"])),
        ("x86:avx512,vnni,bf16,amx/threads=2", x86_dict("sapphirerapids")),
        # sapphirerapids enables VNNI and BF16 by itself: switched off as the target lacks them
        ("x86:avx512,amx/threads=2",
         x86_dict("sapphirerapids", mattr=["-avx512vnni", "-avx512bf16"])),
        # an explicit CPU is trusted; features it does not imply are added
        ("x86:avx2@cpu=skylake-avx512/threads=2", x86_dict("skylake-avx512")),
        ("x86:avx512,vnni@cpu=skylake-avx512/threads=2",
         x86_dict("skylake-avx512", mattr=["+avx512vnni"])),
        ("x86:avx2@cpu=mycpu/threads=2", x86_dict("mycpu", mattr=["+sse4.2", "+avx2"])),
    ],
)  # fmt: skip
def test_tvm_dict_x86(text: str, expected: dict[str, object]) -> None:
    assert parse_target(text).to_tvm_dict() == expected


def arm_dict(mcpu: str, mattr: list[str], threads: int = 2) -> dict[str, object]:
    return {
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mcpu": mcpu,
        "mattr": mattr,
        "num-cores": threads,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("arm/threads=2", arm_dict("cortex-a72", ["+neon"])),
        ("arm:neon/threads=4", arm_dict("cortex-a72", ["+neon"], 4)),
        # cortex-a76 enables fullfp16 by itself: switched off as the target lacks it
        ("arm:neon,dotprod/threads=2", arm_dict("cortex-a76", ["+neon", "+dotprod", "-fullfp16"])),
        ("arm:dotprod,fp16/threads=2", arm_dict("cortex-a76", ["+neon", "+dotprod", "+fullfp16"])),
        ("arm:dotprod,i8mm,fp16/threads=2",
         arm_dict("cortex-a76", ["+neon", "+dotprod", "+i8mm", "+fullfp16"])),
        ("arm:sve/threads=2", arm_dict("cortex-a72", ["+neon", "+fullfp16", "+sve"])),
        ("arm:dotprod@cpu=neoverse-n1/threads=2", arm_dict("neoverse-n1", ["+neon", "+dotprod"])),
    ],
)  # fmt: skip
def test_tvm_dict_arm(text: str, expected: dict[str, object]) -> None:
    assert parse_target(text).to_tvm_dict() == expected


def test_tvm_dict_cuda_with_host() -> None:
    host = parse_target("x86:avx512,vnni/threads=4")
    d = parse_target("cuda:sm_80/threads=4").to_tvm_dict(host=host)
    assert d == {"kind": "cuda", "arch": "sm_80", "host": x86_dict("icelake-server", 4)}
    json.dumps(d)


def test_tvm_dict_cuda_default_host_is_this_machine() -> None:
    d = parse_target("cuda:sm_90/threads=3").to_tvm_dict()
    assert d["kind"] == "cuda" and d["arch"] == "sm_90"
    expected_host = Target(
        host_target().arch, host_target().features, vector_bits=host_target().vector_bits, threads=3
    ).to_tvm_dict()
    assert d["host"] == expected_host


def test_tvm_dict_cuda_host_must_be_a_cpu() -> None:
    with pytest.raises(LeptonError, match="must be a CPU target"):
        parse_target("cuda:sm_80").to_tvm_dict(host=parse_target("cuda:sm_80"))


def test_tvm_accepts_the_dicts() -> None:
    """TVM 0.27 builds targets from the dicts, and sees the features the `Target` has."""
    tvm = pytest.importorskip("tvm")
    from tvm.target import codegen

    for text in (
        "x86",
        "x86:avx2",
        "x86:avx512,vnni",
        "x86:avx512,amx",
        "x86:avx512,vnni,amx,bf16",
    ):
        t = parse_target(text)
        tt = tvm.target.Target(t.to_tvm_dict())
        for feature in ("avx2", "avx512f", "avx512vnni", "avx512bf16", "amx-tile", "amx-int8"):
            assert bool(codegen.llvm_cpu_has_features([feature], tt)) == t.has(feature), (
                text,
                feature,
            )
    for text in ("arm", "arm:neon,dotprod", "arm:dotprod,i8mm,fp16", "arm:sve"):
        t = parse_target(text)
        f = tvm.target.Target(t.to_tvm_dict()).features
        assert bool(f.has_asimd) and bool(f.has_dotprod) == t.has("dotprod"), text
        assert bool(f.has_matmul_i8) == t.has("i8mm") and bool(f.has_sve) == t.has("sve"), text
        assert bool(f.has_fp16_simd) == t.has("fp16"), text
    cuda = tvm.target.Target(parse_target("cuda:sm_80").to_tvm_dict())
    assert cuda.kind.name == "cuda" and str(cuda.attrs["arch"]) == "sm_80"
    assert cuda.host is not None and cuda.host.kind.name == "llvm"


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mips", r"unknown target architecture 'mips'.*accepted: host, x86, x86_64, x86-64"),
        ("riscv:v", r"unknown target architecture 'riscv'.*arm64, aarch64, cuda"),
        ("x86:avx9000", r"unknown feature 'avx9000' for x86_64.*accepted: sse4.2, avx2, fma"),
        ("x86:avx9000", r"aliases: .*vnni=avx512vnni.*amx=amx-tile\+amx-int8\+amx-bf16"),
        ("x86:neon", r"unknown feature 'neon' for x86_64 in target 'x86:neon' \('neon' is for "
                     r"aarch64\)"),
        ("arm:avx2", r"unknown feature 'avx2' for aarch64.*accepted: neon, dotprod, i8mm, fp16"),
        ("cuda", r"cuda target needs its compute capability in target 'cuda', e\.g\. "
                 r"'cuda:sm_80'.*sm_50"),
        ("cuda:sm_50", r"sm_75 or newer"),
        ("cuda:sm_80,sm_90", r"more than one compute capability"),
        ("cuda:sm_80,avx2", r"unknown feature 'avx2' for cuda.*'sm_NN'"),
        ("cuda:SM 80!", r"unknown feature 'sm80!' for cuda"),
        ("cuda:sm_80@cpu=haswell", r"cuda target takes no cpu"),
        ("", r"non-empty string"),
        ("   ", r"non-empty string"),
        ("x86:", r"empty feature name in target 'x86:'"),
        ("x86:avx512,,vnni", r"empty feature name"),
        ("x86:+", r"empty feature name"),
        ("x86@mcpu=haswell", r"expected '@cpu=NAME'"),
        ("x86@cpu=", r"expected '@cpu=NAME'"),
        ("x86@cpu=a@cpu=b", r"'@cpu=' given more than once"),
        ("x86/cores=2", r"unknown option '/cores=2'.*accepted: /threads=N, /vector_bits=N"),
        ("x86/threads", r"unknown option"),
        ("x86/threads=0", r"'/threads' must be a positive integer"),
        ("x86/threads=two", r"'/threads' must be a positive integer"),
        ("x86/threads=2/threads=3", r"given more than once"),
        ("x86/vector_bits=256", r"vector_bits can only be chosen for aarch64 targets with sve"),
        ("arm:sve/vector_bits=200", r"multiple of 128"),
        ("host:avx2", r"'host' takes no feature list"),
    ],
)  # fmt: skip
def test_errors(text: str, message: str) -> None:
    with pytest.raises(LeptonError, match=message):
        parse_target(text)


def test_every_parse_error_names_the_target() -> None:
    for text in ("mips", "x86:avx9000", "cuda", "x86/threads=0", "arm:sve/vector_bits=200"):
        with pytest.raises(LeptonError, match=f"in target '{text}'"):
            parse_target(text)


def test_non_string_is_refused() -> None:
    with pytest.raises(LeptonError, match="non-empty string"):
        parse_target(None)  # type: ignore[arg-type]


def test_constructor_errors() -> None:
    with pytest.raises(LeptonError, match="unknown target architecture 'mips'"):
        Target("mips")  # type: ignore[arg-type]
    with pytest.raises(LeptonError, match="needs its compute capability"):
        Target("cuda")
    with pytest.raises(LeptonError, match="only cuda targets"):
        Target("x86_64", sm=80)
    with pytest.raises(LeptonError, match="threads must be a positive integer"):
        Target("x86_64", threads=0)
    with pytest.raises(LeptonError, match="set of names"):
        Target("x86_64", "avx2")  # type: ignore[arg-type]
    with pytest.raises(LeptonError, match="LLVM CPU name"):
        Target("x86_64", cpu="Sky Lake")


# -- host detection -------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_detect_x86_from_flags(tmp_path: Path) -> None:
    flags = (
        "fpu sse4_1 sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx_vnni "
        "avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"
    )
    info = write(
        tmp_path, f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
    )
    t = detect_target("x86_64", info)
    assert t.features == set(FEATURES["x86_64"])
    assert (t.arch, t.cpu, t.vector_bits, t.notes) == ("x86_64", None, 512, ())
    assert t.to_tvm_dict()["mcpu"] == "sapphirerapids"
    assert detect_target("AMD64", info).arch == "x86_64"


def test_detect_x86_avx2_only(tmp_path: Path) -> None:
    info = write(tmp_path, "flags\t\t: fpu sse4_2 avx avx2 fma\n")
    t = detect_target("x86_64", info)
    assert (t.features, t.vector_bits) == ({"sse4.2", "avx2", "fma"}, 256)
    assert t.to_tvm_dict()["mcpu"] == "haswell"


def test_detect_aarch64_from_features(tmp_path: Path) -> None:
    info = write(
        tmp_path, "processor\t: 0\nFeatures\t: fp asimd evtstrm aes fphp asimdhp asimddp\n"
    )
    t = detect_target("aarch64", info)
    assert (t.arch, t.features, t.vector_bits) == ("aarch64", {"neon", "fp16", "dotprod"}, 128)
    assert detect_target("arm64", info).features == t.features
    info = write(tmp_path, "Features\t: fp asimd asimddp i8mm sve fphp\n")
    assert detect_target("aarch64", info).features == {"neon", "dotprod", "i8mm", "sve", "fp16"}


def test_detect_without_cpuinfo_falls_back_to_baseline(tmp_path: Path) -> None:
    t = detect_target("x86_64", tmp_path / "missing")
    assert (t.features, t.vector_bits) == (frozenset(), 128)
    assert len(t.notes) == 1 and "could not read" in t.notes[0] and "baseline" in t.notes[0]
    arm = detect_target("arm64", tmp_path / "missing")
    assert arm.features == {"neon"} and "baseline" in arm.notes[0]
    assert Target.from_dict(t.to_dict()).notes == t.notes


def test_detect_without_flags_line_says_so(tmp_path: Path) -> None:
    t = detect_target("x86_64", write(tmp_path, "processor\t: 0\n"))
    assert t.features == frozenset() and "no 'flags' line" in t.notes[0]


def test_detect_unknown_machine() -> None:
    with pytest.raises(LeptonError, match=r"host machine 'riscv64'.*x86_64 and aarch64"):
        detect_target("riscv64")


def cpuinfo_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return None


def test_host_detection_is_consistent_with_this_machine() -> None:
    host = host_target()
    assert host is host_target()  # cached
    machine = platform.machine().lower()
    assert host.arch == {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    assert host.is_cpu and host.cpu is None and host.sm is None
    assert host.threads == len(os.sched_getaffinity(0))
    assert parse_target(str(host)) == host
    flags = cpuinfo_flags()
    if host.arch == "x86_64":
        assert (host.vector_bits == 512) == host.has("avx512f")
        assert (host.vector_bits == 256) == (host.has("avx2") and not host.has("avx512f"))
        if flags is not None:
            assert host.has("avx512f") == ("avx512f" in flags)
            assert host.has("avx512vnni") == ("avx512_vnni" in flags)
            assert host.has("amx-tile") == ("amx_tile" in flags)
            assert host.has("avx2") == ("avx2" in flags or "avx512f" in flags)
            mcpu = host.to_tvm_dict()["mcpu"]
            if host.has("avx512f") and host.has("amx-tile"):
                assert mcpu == "sapphirerapids"
    else:
        assert host.has("neon") and host.vector_bits is not None and host.vector_bits % 128 == 0
        if flags is not None:
            assert host.has("dotprod") == ("asimddp" in flags)
    if flags is None:
        assert host.notes


# -- import cost ----------------------------------------------------------------------------------


def test_import_is_standard_library_only() -> None:
    code = (
        "import sys\n"
        "import lepton_compiler.targets.target as t\n"
        "t.parse_target('x86:avx512,vnni').to_tvm_dict()\n"
        "t.parse_target('cuda:sm_80').to_tvm_dict()\n"
        "heavy = [m for m in ('tvm', 'numba', 'onnx', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
