"""What a compilation target is, as plain data: architecture, features, vector width, threads.

Every later stage asks the target the same questions — which architecture, does it have VNNI,
how many float32 lanes fit a vector register, which compute capability — so the answer lives in
one small frozen value instead of in strings re-parsed by each backend. A `Target` is parsed
from short texts (``"x86:avx512,vnni"``, ``"arm:neon,dotprod"``, ``"cuda:sm_80"``, ``"host"``),
prints back to one canonical text, converts to a JSON-ready dict for artifact manifests and
`PassContext.target`, and to the dict form of a TVM 0.27 target (the only form TVM 0.27 accepts,
see TVM-NOTES).

This module imports only the standard library: importing it must never pull in TVM or Numba,
so `lepton_compiler.compile` can validate a target string before anything heavy is loaded.

Target text grammar (spaces are ignored, case does not matter)::

    TARGET   := ARCH [":" FEATURES] ["@cpu=" NAME] ("/" OPTION)*
    ARCH     := host | x86 | x86_64 | x86-64 | x64 | amd64 | arm | arm64 | aarch64 | cuda
    FEATURES := FEATURE ("," FEATURE)*        each with or without a leading "+"
    OPTION   := "threads=" N | "vector_bits=" N

Examples: ``x86``, ``x86:avx512,vnni``, ``x86:+avx2,+fma@cpu=haswell/threads=4``,
``arm:neon,dotprod``, ``arm:sve/vector_bits=256``, ``cuda:sm_80``, ``host/threads=2``.

- ``host`` detects the machine this runs on (`host_target`); it takes no feature list but
  accepts ``@cpu=`` and options.
- Features are normalized: aliases expand (``vnni`` → ``avx512vnni``; ``avx512`` →
  ``avx512f,avx512bw,avx512vl,avx512dq,avx512cd``; ``amx`` → ``amx-tile,amx-int8,amx-bf16``)
  and the set is closed under implication (``avx512f`` implies ``avx2``, ``fma``, ``sse4.2``;
  every aarch64 target has ``neon``, which ARMv8-A makes mandatory), so ``has("avx2")`` is true
  for an AVX-512 target.
- A CUDA target needs its compute capability as ``sm_NN`` (``sm_75`` or newer): CUDA 13
  rejects TVM's ``sm_50`` default, so there is no default.
- ``threads`` defaults to the number of CPU cores this process may use.
- ``vector_bits`` is derived from the features (x86: 512 with avx512f, 256 with avx2, else 128;
  aarch64: 128) and may only be given for SVE targets, whose vector length is not fixed.

The canonical text (``str(target)``) spells everything out — architecture, every feature in a
fixed order, cpu, threads — so ``parse_target(str(t)) == t`` on any machine.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lepton_compiler.errors import LeptonError

Arch = Literal["x86_64", "aarch64", "cuda"]

#: Architecture names accepted in target texts, and the architecture each one means.
ARCH_ALIASES: dict[str, str] = {
    "host": "host",
    "x86": "x86_64", "x86_64": "x86_64", "x86-64": "x86_64", "x64": "x86_64", "amd64": "x86_64",
    "arm": "aarch64", "arm64": "aarch64", "aarch64": "aarch64",
    "cuda": "cuda",
}  # fmt: skip

#: Canonical feature names per architecture, in the order the canonical text lists them.
#: x86 names are LLVM's; aarch64 names are ours (see `_LLVM_ATTR` for LLVM's spelling).
FEATURES: dict[str, tuple[str, ...]] = {
    "x86_64": (
        "sse4.2", "avx2", "fma",
        "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512vnni", "avx512bf16",
        "amx-tile", "amx-int8", "amx-bf16",
    ),
    "aarch64": ("neon", "dotprod", "i8mm", "fp16", "sve"),
    "cuda": (),
}  # fmt: skip

#: Other names accepted for features, each mapping to one or more canonical names.
#: `/proc/cpuinfo` spellings are accepted too (``avx512_vnni``, ``amx_tile``, ``asimddp``).
FEATURE_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "x86_64": {
        "sse4_2": ("sse4.2",), "sse42": ("sse4.2",),
        "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"),
        "vnni": ("avx512vnni",), "avx512_vnni": ("avx512vnni",),
        "bf16": ("avx512bf16",), "avx512_bf16": ("avx512bf16",),
        "amx": ("amx-tile", "amx-int8", "amx-bf16"),
        "amx_tile": ("amx-tile",), "amx_int8": ("amx-int8",), "amx_bf16": ("amx-bf16",),
    },
    "aarch64": {
        "asimd": ("neon",), "simd": ("neon",),
        "asimddp": ("dotprod",), "dot": ("dotprod",),
        "fullfp16": ("fp16",), "fphp": ("fp16",),
    },
    "cuda": {},
}  # fmt: skip

#: Features each feature implies (closed transitively), following LLVM's feature definitions.
_IMPLIES: dict[str, tuple[str, ...]] = {
    "avx2": ("sse4.2",),
    "fma": ("sse4.2",),
    "avx512f": ("avx2", "fma"),
    "avx512bw": ("avx512f",),
    "avx512vl": ("avx512f",),
    "avx512dq": ("avx512f",),
    "avx512cd": ("avx512f",),
    "avx512vnni": ("avx512f",),
    "avx512bf16": ("avx512bw",),
    "amx-int8": ("amx-tile",),
    "amx-bf16": ("amx-tile",),
    "dotprod": ("neon",),
    "i8mm": ("neon",),
    "fp16": ("neon",),
    "sve": ("fp16",),
}

#: Features every target of an architecture has.
_BASELINE: dict[str, frozenset[str]] = {
    "x86_64": frozenset(),  # SSE2 only: x86-64's baseline, below anything we name
    "aarch64": frozenset({"neon"}),  # Advanced SIMD is mandatory on ARMv8-A (Linux, macOS)
    "cuda": frozenset(),
}

#: LLVM attribute names where ours differ.
_LLVM_ATTR = {"fp16": "fullfp16"}

_AVX2 = frozenset({"sse4.2", "avx2", "fma"})
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
_VNNI = _AVX512 | {"avx512vnni"}

#: What some LLVM CPU names enable, within our feature vocabulary. Used to list in ``mattr``
#: only the features a CPU name does not already enable.
LLVM_CPU_FEATURES: dict[str, frozenset[str]] = {
    "x86-64": frozenset(),
    "x86-64-v2": frozenset({"sse4.2"}),
    "x86-64-v3": _AVX2,
    "x86-64-v4": _AVX512,
    "haswell": _AVX2,
    "broadwell": _AVX2,
    "skylake": _AVX2,
    "znver2": _AVX2,
    "znver3": _AVX2,
    "skylake-avx512": _AVX512,
    "cascadelake": _VNNI,
    "icelake-client": _VNNI,
    "icelake-server": _VNNI,
    "tigerlake": _VNNI,
    "rocketlake": _VNNI,
    "cooperlake": _VNNI | {"avx512bf16"},
    "znver4": _VNNI | {"avx512bf16"},
    "sapphirerapids": frozenset(FEATURES["x86_64"]),
    "emeraldrapids": frozenset(FEATURES["x86_64"]),
    "graniterapids": frozenset(FEATURES["x86_64"]),
    "generic": frozenset({"neon"}),
    "cortex-a53": frozenset({"neon"}),
    "cortex-a72": frozenset({"neon"}),
    "cortex-a55": frozenset({"neon", "dotprod", "fp16"}),
    "cortex-a76": frozenset({"neon", "dotprod", "fp16"}),
    "cortex-a78": frozenset({"neon", "dotprod", "fp16"}),
    "neoverse-n1": frozenset({"neon", "dotprod", "fp16"}),
    "neoverse-v1": frozenset({"neon", "dotprod", "i8mm", "fp16", "sve"}),
    "neoverse-n2": frozenset({"neon", "dotprod", "i8mm", "fp16", "sve"}),
}

#: `/proc/cpuinfo` flags we read, and the feature each one means.
_CPUINFO_FLAGS: dict[str, dict[str, str]] = {
    "x86_64": {
        "sse4_2": "sse4.2", "avx2": "avx2", "fma": "fma",
        "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
        "avx512dq": "avx512dq", "avx512cd": "avx512cd",
        "avx512_vnni": "avx512vnni", "avx512_bf16": "avx512bf16",
        "amx_tile": "amx-tile", "amx_int8": "amx-int8", "amx_bf16": "amx-bf16",
    },
    "aarch64": {
        "asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve", "fphp": "fp16",
    },
}  # fmt: skip

#: `platform.machine()` values, and the architecture each one means.
_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

_MIN_SM = 75  # the oldest compute capability CUDA 13 compiles for
_SM = re.compile(r"^sm_?(\d{2,3})$")
_CPU_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_OPTIONS = ("threads", "vector_bits")
_EXAMPLES = (
    "'host', 'x86:avx512,vnni', 'arm:neon,dotprod', 'cuda:sm_80', 'x86@cpu=haswell/threads=4'"
)
_GRAMMAR = "ARCH[:FEATURE,FEATURE...][@cpu=NAME][/threads=N][/vector_bits=N]"


def usable_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Target:
    """Where compiled code will run, as data.

    Construct it with `parse_target` (or `host_target`); the constructor normalizes what it is
    given the same way, so ``Target("x86_64", frozenset({"avx512"}))`` equals
    ``parse_target("x86:avx512")`` when the thread counts agree.

    Attributes:
        arch: ``"x86_64"``, ``"aarch64"`` or ``"cuda"``.
        features: canonical feature names (see `FEATURES`), aliases expanded and closed under
            implication. Empty for CUDA: its capability is `sm`.
        cpu: the LLVM ``mcpu`` name to compile for (``"sapphirerapids"``, ``"cortex-a76"``), or
            None to derive one from the features (`llvm_cpu`). Not allowed for CUDA.
        vector_bits: SIMD register width in bits (x86: 512 with avx512f, 256 with avx2, else
            128; aarch64: 128, or the SVE length); None for CUDA. Derived when not given.
        threads: CPU threads to compile for (``num-cores``); defaults to `usable_cores`.
        sm: CUDA compute capability as an integer (80 for ``sm_80``); None for CPUs.
        notes: how the target was obtained where that matters (e.g. ``/proc/cpuinfo`` could
            not be read and a baseline was assumed). Not part of equality or the text form.
    """

    arch: Arch
    features: frozenset[str] = frozenset()
    cpu: str | None = None
    vector_bits: int | None = None
    threads: int = field(default_factory=usable_cores)
    sm: int | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.arch not in FEATURES:
            raise LeptonError(
                f"unknown target architecture {self.arch!r}; accepted: {', '.join(FEATURES)}"
            )
        if isinstance(self.features, str):
            raise LeptonError(f"target features must be a set of names, got {self.features!r}")
        features = _normalize_features(self.arch, self.features, where="")
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "notes", tuple(self.notes))
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise LeptonError(f"target threads must be a positive integer, got {self.threads!r}")
        if self.cpu is not None:
            if self.arch == "cuda":
                raise LeptonError(
                    f"a cuda target takes no cpu (the host CPU is detected); got cpu={self.cpu!r}"
                )
            if not isinstance(self.cpu, str) or not _CPU_NAME.match(self.cpu):
                raise LeptonError(
                    f"target cpu must be an LLVM CPU name such as 'sapphirerapids' or "
                    f"'cortex-a76', got {self.cpu!r}"
                )
        self._check_sm()
        object.__setattr__(self, "vector_bits", self._checked_vector_bits())

    def _check_sm(self) -> None:
        if self.arch != "cuda":
            if self.sm is not None:
                raise LeptonError(f"only cuda targets have a compute capability, got sm={self.sm}")
            return
        if self.sm is None:
            raise LeptonError(
                "a cuda target needs its compute capability, e.g. 'cuda:sm_80' "
                f"(sm_{_MIN_SM} or newer; CUDA 13 rejects TVM's sm_50 default)"
            )
        if isinstance(self.sm, bool) or not isinstance(self.sm, int) or self.sm < _MIN_SM:
            raise LeptonError(
                f"cuda compute capability must be sm_{_MIN_SM} or newer (what CUDA 13 "
                f"compiles for), got {self.sm!r}"
            )

    def _checked_vector_bits(self) -> int | None:
        derived = _derived_vector_bits(self.arch, self.features)
        given = self.vector_bits
        if given is None or given == derived:
            return derived
        if self.arch == "aarch64" and "sve" in self.features:
            if (
                not isinstance(given, bool)
                and isinstance(given, int)
                and 128 <= given <= 2048
                and given % 128 == 0
            ):
                return given
            raise LeptonError(
                f"SVE vector_bits must be a multiple of 128 from 128 to 2048, got {given!r}"
            )
        raise LeptonError(
            f"vector_bits can only be chosen for aarch64 targets with sve; this {self.arch} "
            f"target's width follows from its features ({derived}), got {given!r}"
        )

    # -- questions ----------------------------------------------------------------------------

    @property
    def is_cpu(self) -> bool:
        """True for x86_64 and aarch64 targets."""
        return self.arch in ("x86_64", "aarch64")

    @property
    def is_cuda(self) -> bool:
        """True for CUDA targets."""
        return self.arch == "cuda"

    def has(self, feature: str) -> bool:
        """Whether the target has a feature.

        Args:
            feature: a feature name of any architecture, with or without ``+``; aliases
                (``vnni``, ``avx512``, ``amx``, ``asimd``) work and a group alias needs all its
                members. For CUDA, ``"sm_NN"`` asks whether the compute capability is at
                least NN.

        Returns:
            True if the target has it; False for another architecture's feature.

        Raises:
            LeptonError: no architecture knows the feature (a typo should not read as False).
        """
        name = feature.strip().lower().removeprefix("+")
        sm = _SM.match(name)
        if sm:
            return self.sm is not None and self.sm >= int(sm.group(1))
        for arch in FEATURES:
            expanded = _expand(arch, name)
            if expanded is not None:
                return arch == self.arch and set(expanded) <= self.features
        raise LeptonError(f"unknown target feature {feature!r}; known: {_all_known_features()}")

    def lanes(self, dtype_bits: int = 32) -> int:
        """How many elements of `dtype_bits` bits fit one vector register.

        Raises:
            LeptonError: a CUDA target (it has no SIMD width), or `dtype_bits` is not positive.
        """
        if self.vector_bits is None:
            raise LeptonError(f"a {self.arch} target has no SIMD vector width")
        if dtype_bits < 1:
            raise LeptonError(f"dtype_bits must be positive, got {dtype_bits}")
        return self.vector_bits // dtype_bits

    # -- text and dict forms ------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The canonical text: ``parse_target(t.text) == t`` on any machine."""
        out = self.arch
        names = list(self._ordered_features())
        if self.sm is not None:
            names.append(f"sm_{self.sm}")
        if names:
            out += ":" + ",".join(names)
        if self.cpu is not None:
            out += f"@cpu={self.cpu}"
        out += f"/threads={self.threads}"
        if self.vector_bits != _derived_vector_bits(self.arch, self.features):
            out += f"/vector_bits={self.vector_bits}"
        return out

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (artifact manifests, `PassContext.target`); see `from_dict`."""
        return {
            "arch": self.arch,
            "features": list(self._ordered_features()),
            "cpu": self.cpu,
            "vector_bits": self.vector_bits,
            "threads": self.threads,
            "sm": self.sm,
            "text": self.text,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        """Rebuild a target from `to_dict`'s output.

        ``text`` is derived and only checked; a dict holding only ``text`` is parsed.

        Raises:
            LeptonError: unknown keys, a missing ``arch``, values of the wrong type, or a
                ``text`` that disagrees with the other fields.
        """
        if not isinstance(data, Mapping):
            raise LeptonError(f"a target dict must be a mapping, got {type(data).__name__}")
        known = ("arch", "features", "cpu", "vector_bits", "threads", "sm", "text", "notes")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise LeptonError(f"unknown key(s) {unknown} in target dict; known: {list(known)}")
        if "arch" not in data:
            if isinstance(data.get("text"), str):
                return parse_target(data["text"])
            raise LeptonError("a target dict needs 'arch' (or 'text')")
        features = data.get("features", [])
        notes = data.get("notes", [])
        if not isinstance(features, (list, tuple)) or not all(isinstance(f, str) for f in features):
            raise LeptonError(f"target 'features' must be a list of names, got {features!r}")
        if not isinstance(notes, (list, tuple)) or not all(isinstance(n, str) for n in notes):
            raise LeptonError(f"target 'notes' must be a list of strings, got {notes!r}")
        kwargs: dict[str, Any] = {
            key: data[key] for key in ("cpu", "vector_bits", "threads", "sm") if key in data
        }
        target = cls(data["arch"], frozenset(features), notes=tuple(notes), **kwargs)
        if "text" in data and data["text"] != target.text:
            raise LeptonError(
                f"target dict text {data['text']!r} disagrees with its fields ({target.text!r})"
            )
        return target

    # -- TVM ----------------------------------------------------------------------------------

    @property
    def llvm_cpu(self) -> str | None:
        """The LLVM ``mcpu`` to compile for: `cpu` if given, else one derived from the features.

        x86: ``sapphirerapids`` (avx512f and AMX), ``icelake-server`` (avx512vnni),
        ``skylake-avx512`` (avx512f), ``haswell`` (avx2), else ``x86-64``. aarch64:
        ``cortex-a76`` with dotprod (the core verified with TVM's sdot kernels under
        emulation), else ``cortex-a72`` (a plain ARMv8.0 NEON core). Whatever the derived CPU
        enables beyond the target's features is switched off again in `llvm_mattr`. None for
        CUDA.
        """
        if self.cpu is not None or self.arch == "cuda":
            return self.cpu
        f = self.features
        if self.arch == "aarch64":
            return "cortex-a76" if "dotprod" in f else "cortex-a72"
        if "avx512f" in f and "amx-tile" in f:
            return "sapphirerapids"
        if "avx512vnni" in f:
            return "icelake-server"
        if "avx512f" in f:
            return "skylake-avx512"
        if "avx2" in f:
            return "haswell"
        return "x86-64"

    def llvm_mattr(self) -> list[str]:
        """LLVM ``mattr`` entries for the features `llvm_cpu` does not settle by itself.

        aarch64 lists every feature (``+neon``, ``+dotprod``, ...), the form TVM-NOTES verified;
        x86 lists only features the CPU name does not already enable (all of them for a CPU
        name this module does not know). When the CPU was derived rather than given, features
        it enables that the target lacks are switched off (``-fullfp16`` for a dotprod target
        without fp16 on ``cortex-a76``), so code never uses instructions the target lacks.
        An explicitly given CPU is trusted as is.
        """
        if self.arch == "cuda":
            return []
        cpu = self.llvm_cpu
        assert cpu is not None
        known = LLVM_CPU_FEATURES.get(cpu)
        if self.arch == "aarch64" or known is None:
            add = list(self._ordered_features())
        else:
            add = [f for f in self._ordered_features() if f not in known]
        remove: list[str] = []
        if self.cpu is None and known is not None:
            remove = [f for f in FEATURES[self.arch] if f in known and f not in self.features]
        return [f"+{_LLVM_ATTR.get(f, f)}" for f in add] + [
            f"-{_LLVM_ATTR.get(f, f)}" for f in remove
        ]

    def to_tvm_dict(self, host: Target | None = None) -> dict[str, Any]:
        """The TVM 0.27 target in its dict form (TVM 0.27 rejects ``"llvm -mcpu=..."`` strings).

        Does not import tvm; pass the result to ``tvm.target.Target``.

        Args:
            host: for CUDA, the CPU target of the host side; defaults to `host_target` with
                this target's thread count. Ignored for CPU targets.

        Returns:
            x86: ``{"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": ..., "num-cores": N}``
            (plus ``"mattr"`` when `llvm_mattr` is not empty); aarch64: the same with
            ``"mtriple": "aarch64-linux-gnu"`` and ``"mattr"``; CUDA:
            ``{"kind": "cuda", "arch": "sm_80", "host": <host CPU dict>}``.

        Raises:
            LeptonError: `host` is not a CPU target.
        """
        if self.arch == "cuda":
            host = host if host is not None else replace(host_target(), threads=self.threads)
            if not host.is_cpu:
                raise LeptonError(f"the host of a cuda target must be a CPU target, got {host}")
            return {"kind": "cuda", "arch": f"sm_{self.sm}", "host": host.to_tvm_dict()}
        out: dict[str, Any] = {
            "kind": "llvm",
            "mtriple": f"{self.arch}-linux-gnu",
            "mcpu": self.llvm_cpu,
        }
        mattr = self.llvm_mattr()
        if mattr:
            out["mattr"] = mattr
        out["num-cores"] = self.threads
        return out

    def _ordered_features(self) -> tuple[str, ...]:
        return tuple(f for f in FEATURES[self.arch] if f in self.features)


# -- parsing ------------------------------------------------------------------------------------


def parse_target(text: str) -> Target:
    """Parse a target text (grammar in the module docstring).

    Args:
        text: e.g. ``"host"``, ``"x86:avx512,vnni"``, ``"arm:neon,dotprod@cpu=cortex-a76"``,
            ``"cuda:sm_80"``, ``"x86_64:avx2,fma/threads=8"``, or a canonical text.

    Returns:
        The target; ``host`` is detected (`host_target`).

    Raises:
        LeptonError: an empty text, an unknown architecture or feature, a malformed ``@cpu``
            or option, ``cuda`` without ``sm_NN``; the message lists what is accepted.
    """
    if not isinstance(text, str) or not text.strip():
        raise LeptonError(f"target must be a non-empty string such as 'host', got {text!r}")
    where = f" in target {text!r}"
    s = "".join(text.split()).lower()
    head, *option_parts = s.split("/")
    head, *at_parts = head.split("@")
    arch_name, colon, feature_text = head.partition(":")
    if arch_name not in ARCH_ALIASES:
        raise LeptonError(
            f"unknown target architecture {arch_name!r}{where}; accepted: "
            f"{', '.join(ARCH_ALIASES)} (form {_GRAMMAR}; examples: {_EXAMPLES})"
        )
    arch = ARCH_ALIASES[arch_name]
    cpu = _parse_cpu(at_parts, where)
    options = _parse_options(option_parts, where)

    if arch == "host":
        if colon:
            raise LeptonError(
                f"'host' takes no feature list{where}: it detects the features; name the "
                "architecture instead (e.g. 'x86:avx512,vnni')"
            )
        base = host_target()
        return _build(replace, where, base, cpu=cpu or base.cpu, **options)

    names: list[str] = []
    if colon:
        names = feature_text.split(",")
        if any(not n.removeprefix("+") for n in names):
            raise LeptonError(
                f"empty feature name{where}; features are comma-separated, e.g. "
                f"'{arch_name}:{_example_features(arch)}'"
            )
    sm: int | None = None
    if arch == "cuda":
        sms = [n for n in names if _SM.match(n.removeprefix("+"))]
        names = [n for n in names if n not in sms]
        if names:
            raise LeptonError(_unknown_feature_message(arch, names[0].removeprefix("+"), where))
        if len(sms) > 1:
            raise LeptonError(f"more than one compute capability ({', '.join(sms)}){where}")
        if sms:
            sm = int(_SM.match(sms[0].removeprefix("+")).group(1))  # type: ignore[union-attr]
        else:
            raise LeptonError(
                f"a cuda target needs its compute capability{where}, e.g. 'cuda:sm_80' "
                f"(sm_{_MIN_SM} or newer; CUDA 13 rejects TVM's sm_50 default)"
            )
    features = _normalize_features(arch, names, where=where)
    return _build(Target, where, arch, features, cpu=cpu, sm=sm, **options)


def _build(make: Any, where: str, *args: Any, **kwargs: Any) -> Target:
    """Call `make` (Target or `replace`) and add the target text to a validation error."""
    try:
        return make(*args, **kwargs)
    except LeptonError as exc:
        raise LeptonError(f"{exc}{where}") from None


def _parse_cpu(parts: list[str], where: str) -> str | None:
    if not parts:
        return None
    if len(parts) > 1:
        raise LeptonError(f"'@cpu=' given more than once{where}")
    key, eq, value = parts[0].partition("=")
    if key != "cpu" or not eq or not _CPU_NAME.match(value):
        raise LeptonError(
            f"malformed '@{parts[0]}'{where}; expected '@cpu=NAME' with an LLVM CPU name "
            "such as 'sapphirerapids' or 'cortex-a76'"
        )
    return value


def _parse_options(parts: list[str], where: str) -> dict[str, int]:
    options: dict[str, int] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if key not in _OPTIONS or not eq:
            raise LeptonError(
                f"unknown option {'/' + part!r}{where}; accepted: "
                + ", ".join(f"/{k}=N" for k in _OPTIONS)
            )
        if key in options:
            raise LeptonError(f"option '/{key}' given more than once{where}")
        if not value.isdigit() or int(value) < 1:
            raise LeptonError(f"'/{key}' must be a positive integer, got {value!r}{where}")
        options[key] = int(value)
    return options


def _expand(arch: str, name: str) -> tuple[str, ...] | None:
    """Canonical names for `name` on `arch`, or None if `arch` does not know it."""
    if name in FEATURES[arch]:
        return (name,)
    return FEATURE_ALIASES[arch].get(name)


def _normalize_features(arch: str, names: Iterable[str], where: str) -> frozenset[str]:
    """Expand aliases, check every name, add the baseline and everything implied."""
    out = set(_BASELINE[arch])
    for raw in names:
        name = str(raw).strip().lower().removeprefix("+")
        expanded = _expand(arch, name)
        if expanded is None:
            raise LeptonError(_unknown_feature_message(arch, name, where))
        out.update(expanded)
    todo = list(out)
    while todo:
        for implied in _IMPLIES.get(todo.pop(), ()):
            if implied not in out:
                out.add(implied)
                todo.append(implied)
    return frozenset(out)


def _unknown_feature_message(arch: str, name: str, where: str) -> str:
    if arch == "cuda":
        return (
            f"unknown feature {name!r} for cuda{where}; a cuda target takes only its compute "
            f"capability, 'sm_NN' (sm_{_MIN_SM} or newer), e.g. 'cuda:sm_80'"
        )
    aliases = ", ".join(f"{a}={'+'.join(c)}" for a, c in FEATURE_ALIASES[arch].items())
    other = [a for a in FEATURES if a != arch and _expand(a, name) is not None]
    hint = f" ({name!r} is for {other[0]})" if other else ""
    return (
        f"unknown feature {name!r} for {arch}{where}{hint}; accepted: "
        f"{', '.join(FEATURES[arch])} (aliases: {aliases})"
    )


def _example_features(arch: str) -> str:
    return {"x86_64": "avx512,vnni", "aarch64": "neon,dotprod", "cuda": "sm_80"}[arch]


def _all_known_features() -> str:
    names = [n for arch in FEATURES for n in (*FEATURES[arch], *FEATURE_ALIASES[arch])]
    return ", ".join(names) + ", sm_NN"


def _derived_vector_bits(arch: str, features: frozenset[str]) -> int | None:
    if arch == "cuda":
        return None
    if "avx512f" in features:
        return 512
    if "avx2" in features:
        return 256
    return 128


# -- host detection -----------------------------------------------------------------------------


def detect_target(
    machine: str | None = None,
    cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo",
) -> Target:
    """Detect a CPU target from the machine name and the kernel's CPU flags.

    Reads the first ``flags`` (x86) or ``Features`` (aarch64) line of `cpuinfo`. If it cannot
    be read (macOS, Windows, a sandbox), the architecture's baseline is used and `notes` says
    so. On aarch64 with SVE, the vector length comes from
    ``/proc/sys/abi/sve_default_vector_length`` when readable (else 128 bits).

    Args:
        machine: a `platform.machine()` value; None for this machine's.
        cpuinfo: the file to read flags from.

    Returns:
        A target with `cpu` None (derived from the features) and all usable cores.

    Raises:
        LeptonError: the machine is neither x86_64 nor aarch64.
    """
    machine_name = platform.machine() if machine is None else machine
    arch = _MACHINES.get(machine_name.lower())
    if arch is None:
        raise LeptonError(
            f"cannot compile for host machine {machine_name!r}: supported hosts are "
            "x86_64 and aarch64; name a target instead (e.g. 'x86', 'arm:neon')"
        )
    notes: list[str] = []
    flags: set[str] = set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError as exc:
        notes.append(
            f"could not read {os.fspath(cpuinfo)} ({exc.strerror or exc}); assumed the "
            f"baseline {arch} feature set"
        )
    else:
        key = "flags" if arch == "x86_64" else "features"
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() == key:
                flags = set(value.split())
                break
        else:
            notes.append(
                f"no '{key}' line in {os.fspath(cpuinfo)}; assumed the baseline {arch} feature set"
            )
    features = frozenset(f for flag, f in _CPUINFO_FLAGS[arch].items() if flag in flags)
    vector_bits = None
    if arch == "aarch64" and "sve" in features:
        vector_bits = _sve_bits()
    return Target(arch, features, vector_bits=vector_bits, notes=tuple(notes))  # type: ignore[arg-type]


def _sve_bits() -> int | None:
    try:
        value = int(Path("/proc/sys/abi/sve_default_vector_length").read_text().split()[0]) * 8
    except (OSError, ValueError, IndexError):
        return None
    return value if 128 <= value <= 2048 and value % 128 == 0 else None


@functools.cache
def host_target() -> Target:
    """The machine this process runs on (`detect_target`), detected once and cached."""
    return detect_target()
