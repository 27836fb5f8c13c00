"""Who may read the data directory: its owner only.

``meta.db`` holds user ids, user properties and key hashes; the parts and DSAR outputs hold the
events. Every swell command calls :func:`make_private` first: it sets the umask to 077, so every
directory swell creates is 0700 and every file 0600, and tightens what an older swell (or an
operator) left readable by others.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger("swell.datadir")

#: Files and directories swell creates are readable and writable by their owner only.
UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
#: Directories whose entries are checked too; deeper entries are protected by the 0700
#: directories above them (walking every part file would make start-up grow with the data).
CHECKED_SUBDIRS = ("wal", "blobs")


def make_private(data_dir: Path) -> list[Path]:
    """Set the umask to 077, create ``data_dir`` (0700) if needed, and tighten the modes of the
    directory, its entries and the entries of ``wal/`` and ``blobs/``; returns what was changed
    (each change is logged as a warning). Symbolic links are left alone."""
    os.umask(UMASK)
    data_dir.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    _tighten(data_dir, changed)
    for sub in ("", *CHECKED_SUBDIRS):
        folder = data_dir / sub if sub else data_dir
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            _tighten(Path(entry.path), changed)
    for path in changed:
        logger.warning("%s was readable by other users; its mode is now owner-only", path)
    return changed


def _tighten(path: Path, changed: list[Path]) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        return
    wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        os.chmod(path, mode & wanted)
        changed.append(path)
