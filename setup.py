"""Builds fastpath's Cython extensions: every .pyx under fastpath/ becomes one module."""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CFLAGS = ["-O3", "-march=x86-64-v2", "-DNDEBUG", "-Wno-unused-function", "-Wno-unreachable-code"]
LDFLAGS = []
DIRECTIVES = {"boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False}
if os.environ.get("FASTPATH_SANITIZE"):
    # fuzzing build: bounds checks on, sanitizers in (see fuzz/README.md: run with
    # LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0)
    CFLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    LDFLAGS = ["-fsanitize=address,undefined"]      # links libasan and libubsan
    DIRECTIVES.update(boundscheck=True, wraparound=True, initializedcheck=True)


def extensions():
    exts = []
    for pyx in sorted(glob.glob("fastpath/**/*.pyx", recursive=True)):
        name = pyx[:-4].replace(os.sep, ".")
        # IPsec modules call OpenSSL's libcrypto (Debian: libssl-dev)
        libs = ["crypto"] if name.startswith(("fastpath.crypto.", "fastpath.nodes.esp")) else []
        exts.append(Extension(name, [pyx], include_dirs=[numpy.get_include()],
                              libraries=libs, extra_compile_args=CFLAGS, extra_link_args=LDFLAGS,
                              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]))
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        language_level=3,
        compiler_directives=DIRECTIVES,
        nthreads=os.cpu_count() or 1,
    ),
)
