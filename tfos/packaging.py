"""What reaches YARN executors: tfos as a zip for ``--py-files``, the Python environment as an archive.

* ``tfos zip -o tfos.zip`` zips the ``tfos`` package (its ``.py`` files) as ``--py-files`` wants it,
  the way TensorFlowOnSpark users ship ``tfspark.zip``.
* ``tfos pack-env -o env.tar.gz`` packs the virtual environment tfos runs in with venv-pack, for
  ``--archives env.tar.gz#env`` with ``PYSPARK_PYTHON=./env/bin/python``.

Why venv-pack: tfos is installed and tested in a plain venv (``scripts/setup.sh``, the pinned
``constraints.txt``); venv-pack ships exactly that tested set, where pex would resolve the
requirements again and conda-pack needs a conda environment. What it does not ship is the
interpreter itself: every node needs the same Python at the same path (the archive's
``bin/python`` links to it), which is what the archive's error says when it is missing.

An editable install of tfos (``pip install -e``, as developers have) points outside the venv, so
``pack-env`` leaves it out; ship tfos with ``--py-files tfos.zip`` then.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

# Left out of the archive: Spark on YARN ships its own jars and pyspark.zip to every container,
# and an editable install's finder points at a source checkout the nodes do not have.
ENV_EXCLUDES = ("lib/python*/site-packages/pyspark/jars/*", "lib/python*/site-packages/__editable__*",
                "lib/python*/site-packages/tfos-*.dist-info/*")


class PackagingError(RuntimeError):
    """The zip or the environment archive could not be built; the message says what to change."""


def build_zip(output: str | os.PathLike[str]) -> Path:
    """Write the ``tfos`` package's Python files to the zip ``output`` (``tfos/...`` at its root)."""
    import tfos

    package = Path(tfos.__file__).resolve().parent
    out = Path(output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(package.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            zf.write(path, Path("tfos") / path.relative_to(package))
            count += 1
    os.replace(tmp, out)
    logger.info("wrote %s (%d modules of tfos %s)", out, count, tfos.__version__)
    return out


def _venv_prefix(prefix: str | os.PathLike[str] | None) -> Path:
    root = Path(prefix or sys.prefix).resolve()
    if not (root / "pyvenv.cfg").is_file():
        raise PackagingError(f"{root} is not a virtual environment (no pyvenv.cfg): pass --prefix with the venv "
                             "to pack, e.g. --prefix .venv")
    return root


def pack_env(output: str | os.PathLike[str], prefix: str | os.PathLike[str] | None = None,
             compress_level: int = 1, excludes: tuple[str, ...] = ENV_EXCLUDES) -> Path:
    """Pack the venv at ``prefix`` (default: the running one) into ``output`` (``.tar.gz``, ``.tar`` or ``.zip``)."""
    try:
        import venv_pack
    except ImportError:
        raise PackagingError("venv-pack is not installed: pip install 'tfos[yarn]' (or venv-pack==0.2.0)") from None
    root = _venv_prefix(prefix)
    out = Path(output).resolve()
    if not 0 <= compress_level <= 9:
        raise PackagingError(f"compress_level must be 0..9, got {compress_level}")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = venv_pack.Env(str(root))
    for pattern in excludes:
        env = env.exclude(pattern)
    try:
        env.pack(output=str(out), compress_level=compress_level, force=True, verbose=False)
    except venv_pack.VenvPackException as exc:
        raise PackagingError(f"venv-pack could not pack {root}: {exc}") from None
    logger.info("packed %s into %s (%.0f MB) in %.0f s", root, out, out.stat().st_size / 2**20,
                time.monotonic() - started)
    return out
