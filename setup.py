"""Build the Cython kernels in cconv/_kernels with optimisation and, when it works, OpenMP.

Environment variables read here:
  CCONV_FAIL_NO_OPENMP=1  stop the build if OpenMP cannot be used (default: warn, build serially)
  CCONV_PORTABLE=1        no -march=native: a wheel that runs on any x86-64 (for distribution)
  CCONV_BOUNDSCHECK=1     build with Cython bounds and wraparound checks on (for debugging)
  CCONV_SANITIZE=address,undefined   compile and link with those sanitizers
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent(
    r"""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int threads = 0;
        #pragma omp parallel reduction(+:threads)
        threads += 1;
        printf("%d\n", threads);
        return threads > 0 ? 0 : 1;
    }
    """
)


def env_flag(name):
    return os.environ.get(name, "").strip() not in ("", "0", "false", "False")


def openmp_flags(compiler_type):
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def loud_warning(message):
    bar = "*" * 78
    sys.stderr.write(f"\n{bar}\n* WARNING: {message}\n{bar}\n\n")


class BuildExt(build_ext):
    def probe_openmp(self, compile_flags, link_flags):
        """Compile, link and *run* a small OpenMP program; return the reason it failed, or None."""
        tmp = tempfile.mkdtemp(prefix="cconv-omp-")
        try:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(OPENMP_PROBE)
            try:
                objects = self.compiler.compile([src], output_dir=tmp, extra_postargs=compile_flags)
                exe = os.path.join(tmp, "probe")
                self.compiler.link_executable(objects, exe, extra_postargs=link_flags)
            except Exception as exc:  # the compiler's own error text says why
                return f"the compiler could not build an OpenMP program ({exc})"
            exe_path = exe + (".exe" if sys.platform == "win32" else "")
            try:
                run = subprocess.run([exe_path], capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"an OpenMP test program was built but could not run ({exc})"
            if run.returncode != 0 or not run.stdout.strip().isdigit():
                return f"an OpenMP test program ran but failed (exit {run.returncode})"
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        compile_flags, link_flags = [], []
        if ctype == "msvc":
            compile_flags.append("/O2")
        else:
            compile_flags += ["-O3", "-fno-math-errno"]
            if not env_flag("CCONV_PORTABLE") and sys.platform != "darwin":
                # gcc 12 tunes Zen CPUs for 128-bit vectors; generic tuning uses all 256 bits.
                compile_flags += ["-march=native", "-mtune=generic"]
        sanitize = os.environ.get("CCONV_SANITIZE", "").strip()
        if sanitize and ctype != "msvc":
            compile_flags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g", "-O1"]
            link_flags.append(f"-fsanitize={sanitize}")

        omp_compile, omp_link = openmp_flags(ctype)
        failure = self.probe_openmp(omp_compile, omp_link)
        if failure is None:
            compile_flags += omp_compile
            link_flags += omp_link
        elif env_flag("CCONV_FAIL_NO_OPENMP"):
            raise RuntimeError(f"cconv: OpenMP is required (CCONV_FAIL_NO_OPENMP=1) but {failure}")
        else:
            loud_warning(
                f"cconv is being built WITHOUT OpenMP: {failure}. The kernels will run on one "
                "thread. Install an OpenMP-capable compiler (gcc, or clang with libomp) and "
                "rebuild; set CCONV_FAIL_NO_OPENMP=1 to make this an error."
            )

        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + ext.extra_compile_args
            ext.extra_link_args = link_flags + ext.extra_link_args
        super().build_extensions()


# Built without -ffast-math: under it gcc turns vector sqrtf(v) into v * rsqrt(v), NaN for
# subnormal v, and Adam's second moment goes subnormal for float32 gradients below 1e-18.
IEEE_MODULES = {"cconv._kernels._optim"}


def extensions():
    checks = env_flag("CCONV_BOUNDSCHECK")
    directives = {
        "language_level": 3,
        "boundscheck": checks,
        "wraparound": checks,
        "initializedcheck": checks,
        "cdivision": True,
        "cpow": True,
    }
    exts = []
    for pyx in sorted(glob.glob(os.path.join("cconv", "_kernels", "*.pyx"))):
        name = os.path.splitext(pyx)[0].replace(os.sep, ".")
        extra, libraries = [], []
        # glibc declares its SIMD tanh (libmvec) only under fast-math. The kernels never
        # test for NaN and keep a fixed order of operations per element, so they lose
        # nothing to it; determinism across threads comes from fixed work units.
        if sys.platform.startswith("linux") and name not in IEEE_MODULES:
            extra, libraries = ["-ffast-math"], ["m"]  # libm's link script pulls in libmvec
        if name.endswith(("_gemm", "_winograd")) and sys.platform != "win32":
            # The GEMM micro-kernels' FMAs must stay in the order written: reassociated,
            # gcc splits them into multiplies and adds and spills the accumulators.
            extra = extra + ["-fno-associative-math"]
        exts.append(
            Extension(
                name,
                [pyx],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=extra,
                libraries=libraries,
            )
        )
    return cythonize(exts, compiler_directives=directives)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
