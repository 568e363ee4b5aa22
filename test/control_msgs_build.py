"""Build the test-only ``control_msgs`` interface package (``test/interfaces/control_msgs``) once, cached.

``control_msgs`` cannot be installed from PyPI here, but an interface package builds from the ROS wheels with
system cmake + ninja + a C++ compiler (recipe: ``shared/ENVIRONMENT.md``, "Interface packages can be built
here"). The build goes to ``.cache/control_msgs_ws/<key>/`` in the repository (git-ignored), where ``key`` hashes
the package's files and the Python version: a second test run, or a run after an unrelated change, reuses it
(~0.1 s); editing a ``.msg``/``.action`` file rebuilds (~20-40 s on a 2-core machine). A file lock keeps
parallel test processes from building at the same time.

The install prefix is the cache directory, not the venv. Using the package needs its Python directory on
``sys.path`` / ``PYTHONPATH`` and its ``lib`` directory on ``LD_LIBRARY_PATH`` (rclpy dlopens the type-support
libraries by bare name): :func:`environment` for child processes. A running process cannot change its library
search path, so :func:`activate` preloads the libraries instead (a later dlopen by name finds them loaded).

One change to the venv is needed and made here, idempotently: the ROS wheels' exported CMake files name the
Python and numpy include directories of the machine that built the wheels (``/opt/python/cp3XX-cp3XX/...``);
they are rewritten to this interpreter's (``sysconfig`` include, ``numpy.get_include()``).

Used by ``test/ros/test_controller_interfaces.py`` (fixture ``control_msgs_env``); by hand::

    .venv/bin/python test/control_msgs_build.py            # build (or find) it; prints the exports to use
    eval "$(.venv/bin/python test/control_msgs_build.py --exports)"     # e.g. before `dream-vla-ros eval`
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "test" / "interfaces" / "control_msgs"
CACHE = REPO / ".cache" / "control_msgs_ws"
# The extra wheels of the `interfaces` extra (setup.py): what a rosidl build needs beyond the runtime wheels.
BUILD_PACKAGES = ("ament_cmake", "rosidl_default_generators", "rosidl_core_generators",
                  "ament_cmake_include_directories", "ament_cmake_ros_core")
_FOREIGN_PYTHON = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
_FOREIGN_NUMPY = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include")


class BuildUnavailableError(RuntimeError):
    """The package cannot be built here; the message says what is missing (tests skip with it)."""


@dataclass(frozen=True)
class Built:
    prefix: Path
    python_dir: Path
    seconds: float  # build time; 0.0 when the cached build was reused
    cached: bool


def cache_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in PACKAGE.rglob("*") if p.is_file()):
        digest.update(path.relative_to(PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:16]


def missing_tools(prefix: Path | None = None) -> list[str]:
    """What the build needs and this machine lacks (empty = it can build)."""
    prefix = Path(sys.prefix) if prefix is None else prefix
    missing = [tool for tool in ("cmake", "ninja") if shutil.which(tool) is None]
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        missing.append("a C++ compiler (g++)")
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        missing.append("a C compiler (gcc)")
    for package in BUILD_PACKAGES:
        if not (prefix / "share" / package).is_dir():
            missing.append(f"{package} (pip install the 'interfaces' extra: pip install -e '.[interfaces]')")
    return missing


def _python_dir(prefix: Path) -> Path | None:
    for init in sorted(prefix.glob("**/control_msgs/__init__.py")):
        if (init.parent / "action" / "__init__.py").is_file():
            return init.parent.parent
    return None


def fix_wheel_cmake_paths(prefix: Path | None = None) -> int:
    """Rewrite the wheel-build machine's Python/numpy include paths in ``<prefix>/share/**/*.cmake``; returns
    the number of files changed (0 once done)."""
    import numpy

    prefix = Path(sys.prefix) if prefix is None else prefix
    include, numpy_include = sysconfig.get_paths()["include"], numpy.get_include()
    changed = 0
    for path in (prefix / "share").glob("**/*.cmake"):
        text = path.read_text(errors="surrogateescape")
        if "/opt/python/cp3" not in text:
            continue
        fixed = _FOREIGN_NUMPY.sub(numpy_include, _FOREIGN_PYTHON.sub(include, text))
        if fixed != text:
            path.write_text(fixed, errors="surrogateescape")
            changed += 1
    return changed


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"interface package build step failed ({argv[0]} {argv[1]} ...): exit {code}\n{tail}")


def build_package(source: Path, build: Path, prefix: Path) -> None:
    """Configure, build and install the interface package at ``source`` into ``prefix`` against this venv's ROS
    wheels; objects go to ``build`` (removed afterwards, ~100 MB), the log to ``build.parent / "build.log"``."""
    fix_wheel_cmake_paths()
    venv = sys.prefix
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["AMENT_PREFIX_PATH"] = venv
    env["CMAKE_PREFIX_PATH"] = venv
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = build.parent / "build.log"
    _run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja",
          f"-DCMAKE_PREFIX_PATH={venv}", f"-DCMAKE_INSTALL_PREFIX={prefix}",
          f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release",
          f"-DCMAKE_INSTALL_RPATH={prefix / 'lib'}", "-DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON"], env, log)
    jobs = str(max(1, min(2, os.cpu_count() or 1)))
    _run(["cmake", "--build", str(build), "--parallel", jobs], env, log)
    _run(["cmake", "--install", str(build)], env, log)
    shutil.rmtree(build, ignore_errors=True)


def ensure_built(cache: Path = CACHE) -> Built:
    """The cached build for the current interface files, building it first if needed.

    Raises BuildUnavailableError when tools or build wheels are missing; RuntimeError when the build fails."""
    key = cache_key()
    root = cache / key
    prefix = root / "install"
    with _locked(cache / ".lock"):
        python_dir = _python_dir(prefix)
        if (root / "ok").is_file() and python_dir is not None:
            return Built(prefix, python_dir, 0.0, True)
        missing = missing_tools()
        if missing:
            raise BuildUnavailableError("cannot build the test control_msgs package: missing " + ", ".join(missing))
        started = time.monotonic()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        build_package(PACKAGE, root / "build", prefix)
        python_dir = _python_dir(prefix)
        if python_dir is None:
            raise RuntimeError(f"control_msgs built, but no Python package was installed under {prefix}")
        seconds = time.monotonic() - started
        (root / "ok").write_text(f"{seconds:.1f}\n")
        return Built(prefix, python_dir, seconds, False)


def environment(built: Built, base: dict[str, str] | None = None) -> dict[str, str]:
    """Variables a child process needs to import the built package (added in front of ``base``'s)."""
    base = os.environ if base is None else base
    paths = [str(built.python_dir), *filter(None, base.get("PYTHONPATH", "").split(os.pathsep))]
    libraries = [str(built.prefix / "lib"), *filter(None, base.get("LD_LIBRARY_PATH", "").split(os.pathsep))]
    ament = [str(built.prefix), *filter(None, base.get("AMENT_PREFIX_PATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
            "LD_LIBRARY_PATH": os.pathsep.join(dict.fromkeys(libraries)),
            "AMENT_PREFIX_PATH": os.pathsep.join(dict.fromkeys(ament))}


def activate(built: Built) -> None:
    """Make ``import control_msgs`` work in this process (and its children, through the environment)."""
    import ctypes

    if str(built.python_dir) not in sys.path:
        sys.path.insert(0, str(built.python_dir))
    os.environ.update(environment(built))
    pending = sorted((built.prefix / "lib").glob("lib*.so"))
    while pending:  # load order follows their dependencies: retry what failed until nothing changes
        failed = []
        for library in pending:
            try:
                ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(library)
        if len(failed) == len(pending):
            raise RuntimeError(f"cannot load {[p.name for p in failed]} from {built.prefix / 'lib'}")
        pending = failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", action="store_true",
                        help="print only shell export lines (PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH)")
    args = parser.parse_args(argv)
    try:
        built = ensure_built()
    except BuildUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in environment(built).items())
    if not args.exports:
        how = "cached" if built.cached else f"built in {built.seconds:.1f} s"
        print(f"# control_msgs ({how}): {built.prefix}; to use it in a shell:")
    print(exports)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
