"""Build the Cython kernels in cconv/_kernels, once per CPU level, with OpenMP when it works.

Every kernel module is compiled for each level of cconv/_kernels/_levels.py (x86-64:
default, avx2, avx512; aarch64: default, which has NEON) into cconv/_kernels/<level>/;
the import picks one. Templates (*.pyx.tp, *.pxd.tp) are rendered with Tempita into
build/cconv-gen first.

No -ffast-math, and none of its parts, anywhere: results must not depend on the vector
width, and a shared library linked with it turns on flush-to-zero for the whole process.
Any such flag arriving through $CFLAGS or $LDFLAGS is removed.

Environment variables read here:
  CCONV_FAIL_NO_OPENMP=1  stop the build if OpenMP cannot be used (default: warn, build serially)
  CCONV_LEVELS=avx2,avx512  build only these levels (for quicker development builds)
  CCONV_BOUNDSCHECK=1     build with Cython bounds and wraparound checks on (for debugging)
  CCONV_SANITIZE=address,undefined   compile and link with those sanitizers
"""
import glob
import os
import runpy
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

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:  # three levels of every module: use the cores
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        compile_flags, link_flags = [], []
        if ctype == "msvc":
            compile_flags.append("/O2")
        else:
            remove_unsafe_math(self.compiler)
            # -ffp-contract=off: every fused multiply-add is written out (the SIMD layer's
            # fma), so no compiler fuses differently at another level or version.
            compile_flags += ["-O3", "-fno-math-errno", "-fno-trapping-math",
                              "-ffp-contract=off", "-fno-fast-math"]
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
            level = LEVEL_OF.get(ext.name)
            level_flags = [] if level is None else LEVEL_FLAGS[level][ctype == "msvc"]
            ext.extra_compile_args = compile_flags + level_flags + ext.extra_compile_args
            ext.extra_link_args = link_flags + ext.extra_link_args
        super().build_extensions()


UNSAFE_MATH = {"-ffast-math", "-funsafe-math-optimizations", "-fassociative-math",
               "-freciprocal-math", "-ffinite-math-only", "-ffp-contract=fast"}


def remove_unsafe_math(compiler):
    """Drop fast-math flags that $CFLAGS, $LDFLAGS or Python's own build flags bring
    (-Ofast becomes -O3): at the link, gcc would add crtfastmath.o, which sets
    flush-to-zero for every library in the user's process."""
    for attr in ("compiler_so", "linker_so", "compiler", "compiler_cxx", "linker_exe"):
        command = getattr(compiler, attr, None)
        if isinstance(command, list):
            setattr(compiler, attr, ["-O3" if f == "-Ofast" else f
                                     for f in command if f not in UNSAFE_MATH])


LEVELS = runpy.run_path(os.path.join("cconv", "_kernels", "_levels.py"))
LEVEL_FLAGS = {name: (gcc, msvc) for name, _, gcc, msvc in LEVELS["levels"]()
               if name in os.environ.get("CCONV_LEVELS", name).split(",")}
LEVEL_OF = {}  # extension name -> CPU level
GENERATED = os.path.join("build", "cconv-gen")
BASELINE_MODULES = {"_config"}


ACTIVATION_TABLE = os.path.join("cconv", "activations.py")


def render_templates():
    """*.tp -> build/cconv-gen/cconv/_kernels/*, only when the template or the activation
    table is newer. Templates see ELEMENTWISE: the table's rows that have a kernel code."""
    from Cython import Tempita

    table = runpy.run_path(ACTIVATION_TABLE)
    elementwise = [row for row in table["TABLE"] if row.code is not None]
    out_dir = os.path.join(GENERATED, "cconv", "_kernels")
    os.makedirs(out_dir, exist_ok=True)
    for template in glob.glob(os.path.join("cconv", "_kernels", "*.tp")):
        out = os.path.join(out_dir, os.path.basename(template)[:-3])
        newest = max(os.path.getmtime(template), os.path.getmtime(ACTIVATION_TABLE))
        if os.path.exists(out) and os.path.getmtime(out) >= newest:
            continue
        with open(template) as f:
            text = Tempita.sub(f.read(), name=template, ELEMENTWISE=elementwise)
        with open(out + ".tmp", "w") as f:
            f.write(f"# Generated from {template} by setup.py: edit the template.\n{text}")
        os.replace(out + ".tmp", out)


def level_stub(module, source, level):
    """A one-line .pyx that includes the module's source, so that each level compiles
    the same text under its own module name."""
    stub_dir = os.path.join(GENERATED, "levels", level)
    os.makedirs(stub_dir, exist_ok=True)
    stub = os.path.join(stub_dir, module + ".pyx")
    text = f'include "{os.path.abspath(source)}"\n'
    if not os.path.exists(stub) or open(stub).read() != text:
        with open(stub, "w") as f:
            f.write(text)
    return stub


def extensions():
    render_templates()
    checks = env_flag("CCONV_BOUNDSCHECK")
    directives = {
        "language_level": 3,
        "boundscheck": checks,
        "wraparound": checks,
        "initializedcheck": checks,
        "cdivision": True,
        "cpow": True,
    }
    common = dict(
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        libraries=["m"] if sys.platform.startswith("linux") else [],
    )
    sources = sorted(glob.glob(os.path.join("cconv", "_kernels", "*.pyx"))
                     + glob.glob(os.path.join(GENERATED, "cconv", "_kernels", "*.pyx")))
    exts = []
    for pyx in sources:
        module = os.path.splitext(os.path.basename(pyx))[0]
        if module in BASELINE_MODULES:
            exts.append(Extension(f"cconv._kernels.{module}", [pyx], **common))
            continue
        for level in LEVEL_FLAGS:
            name = f"cconv._kernels.{level}.{module}"
            LEVEL_OF[name] = level
            exts.append(Extension(name, [level_stub(module, pyx, level)], **common))
    return cythonize(exts, compiler_directives=directives, include_path=[".", GENERATED],
                     nthreads=os.cpu_count() or 1)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
