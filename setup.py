"""Only for the optional C accelerator of the ledger walk; everything else is in pyproject.toml.

`ledger._walk` links OpenSSL's libcrypto (package libssl-dev on Debian). If it cannot be built
(no compiler or headers), the install goes on without it and the walk runs in pure Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("ledger._walk", ["ledger/_walk.c"], libraries=["crypto"], optional=True, extra_compile_args=["-O2"]),
    ],
)
