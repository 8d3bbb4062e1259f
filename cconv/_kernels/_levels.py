"""CPU levels: the one table that setup.py builds from and the import picks from.

Every kernel module is compiled once per level of the machine's architecture, from the
same source with the level's flags, into cconv/_kernels/<level>/. At import, the best
level whose features the running CPU reports is used (numpy reads the CPU's features
and checks that the OS saves the wider registers). This file is plain Python with no
import of cconv, so that setup.py can run it before anything is built.
"""
import os
import platform
import warnings

ENV = "CCONV_CPU_CAPABILITY"

# Per architecture, levels from the lowest: (name, numpy's feature names it needs on top
# of the levels below it, gcc/clang flags, MSVC flags). numpy >= 2 itself needs x86-64-v2,
# so the x86 default level assumes it.
X86_64 = (
    ("default", ("SSE3", "SSSE3", "SSE41", "SSE42", "POPCNT"),
     ["-march=x86-64-v2"], []),
    ("avx2", ("AVX", "AVX2", "FMA3"),
     ["-march=x86-64-v2", "-mavx2", "-mfma"], ["/arch:AVX2"]),
    ("avx512", ("AVX512F", "AVX512BW", "AVX512DQ", "AVX512VL"),
     ["-march=x86-64-v2", "-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq",
      "-mavx512vl", "-mprefer-vector-width=512"], ["/arch:AVX512"]),
)
# ARMv8's baseline has NEON (ASIMD) with fused multiply-add.
AARCH64 = (("default", ("ASIMD",), [], []),)
# Anything else: one build with the compiler's defaults; the SIMD layer falls back to scalars.
OTHER = (("default", (), [], []),)


def architecture(machine=None):
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    return machine


def levels(machine=None):
    """The level table for an architecture (the running one by default)."""
    return {"x86_64": X86_64, "aarch64": AARCH64}.get(architecture(machine), OTHER)


def level_names(machine=None):
    return [name for name, *_ in levels(machine)]


def _cpu_features():
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__


def supported(features=None, machine=None):
    """The levels this CPU runs, lowest first: each needs its features and its lower
    levels'. An empty list means the CPU lacks even the default level."""
    features = _cpu_features() if features is None else features
    names, needed = [], []
    for name, needs, _, _ in levels(machine):
        needed += needs
        if not all(features.get(f, False) for f in needed):
            break
        names.append(name)
    return names


def choose(built, requested=None, features=None, machine=None):
    """The level to load: the best one that is built and that the CPU runs, or the
    requested one ($CCONV_CPU_CAPABILITY) when the CPU runs it. A request the CPU cannot
    run, or that names no level, warns and falls back to the best."""
    if not built:
        raise ImportError("cconv: its compiled kernels are not here (a source checkout that "
                          "was not built?): install it with `pip install .`, or build in "
                          "place with `python setup.py build_ext --inplace`.")
    runs = supported(features, machine)
    usable = [name for name in runs if name in built]
    if not usable:
        raise ImportError(
            f"cconv: this CPU has none of the kernel levels built here ({', '.join(built)}): "
            f"the lowest, '{level_names(machine)[0]}', needs the CPU features "
            f"{', '.join(levels(machine)[0][1])}.")
    best = usable[-1]
    requested = (requested or "").strip().lower()
    if not requested:
        return best
    if requested not in level_names(machine):
        warnings.warn(f"{ENV}={requested!r} is not a level: expected one of "
                      f"{level_names(machine)}; using {best!r}.", RuntimeWarning, stacklevel=3)
        return best
    if requested in runs and requested not in built:
        warnings.warn(f"{ENV}={requested!r}: this build has no such level (built: "
                      f"{built}); using {best!r}.", RuntimeWarning, stacklevel=3)
        return best
    if requested not in usable:
        warnings.warn(f"{ENV}={requested!r}: this CPU does not support it; the levels it "
                      f"supports are {runs}; using {best!r}.", RuntimeWarning, stacklevel=3)
        return best
    return requested


def requested():
    return os.environ.get(ENV, "")
