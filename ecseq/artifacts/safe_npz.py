"""Weights as plain .npz archives of numeric arrays, written and read without pickle.

Archives are written with allow_pickle=False; on reading, every zip member's .npy header is
checked before numpy parses it and the archive is then loaded with allow_pickle=False, so no
byte of an artifact is ever unpickled or executed. Members must be stored, not compressed (as
np.savez writes them), and hold exactly the bytes their header describes: what numpy then
reads is bounded by the archive's own size, whatever a zip header or an .npy header claims.
"""

from __future__ import annotations

import io
import math
import pickletools
import zipfile
from collections.abc import Mapping

import numpy as np

from ecseq.artifacts.names import ArtifactError, refuse, unsafe_name_problem


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed .npz of numeric arrays; object arrays are refused (allow_pickle=False)."""
    for key, value in arrays.items():
        if key in ("file", "allow_pickle") or unsafe_name_problem(key) is not None:
            raise ValueError(f"array name {key!r} cannot be stored in an npz")
        if value.dtype.hasobject:
            raise ValueError(f"array {key!r} has an object dtype; weights must be numeric")
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _is_pickle(data: bytes) -> bool:
    """Whether `data` decodes as a pickle stream (opcodes are only decoded, never run)."""
    if data[:1] == b"\x80":
        return True
    try:
        ops = [op.name for op, _, _ in pickletools.genops(data)]
    except Exception:  # noqa: BLE001 - anything genops chokes on is not a pickle
        return False
    return bool(ops) and ops[-1] == "STOP"


def read_npz(data: bytes, name: str, version: str) -> dict[str, np.ndarray]:
    """Numeric arrays from .npz bytes. Every member's .npy header is checked before numpy reads it:
    a pickle (as the file or as a member) or an object dtype is `unsafe_weights`; anything else
    numpy cannot read is `bad_weights`."""
    if not data.startswith(b"PK\x03\x04"):
        if _is_pickle(data):
            raise refuse(version, "unsafe_weights", f"{name} is a pickle payload, refused unread")
        raise refuse(version, "bad_weights", f"{name} is not an npz (zip) archive")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise refuse(version, "bad_weights", f"{name} has duplicate members")
            if sum(info.file_size for info in infos) > len(data):
                raise refuse(version, "bad_weights", f"{name}: its members claim more bytes than the archive has")
            for info in infos:
                member = info.filename
                if not member.endswith(".npy") or unsafe_name_problem(member) is not None:
                    raise refuse(version, "bad_weights", f"{name} has an unexpected member {member!r}")
                if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                    raise refuse(version, "bad_weights", f"{name}: member {member} is compressed (ecseq stores "
                                                         "arrays uncompressed)")
                with zf.open(info) as fh:
                    head = fh.read(16 + 65536)
                if not head.startswith(np.lib.format.MAGIC_PREFIX):
                    if _is_pickle(head):
                        raise refuse(version, "unsafe_weights", f"{name}: member {member} is a pickle payload")
                    raise refuse(version, "bad_weights", f"{name}: member {member} is not a .npy array")
                fp = io.BytesIO(head)
                major_minor = np.lib.format.read_magic(fp)
                if major_minor == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                elif major_minor == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    raise refuse(version, "bad_weights", f"{name}: member {member} has .npy version {major_minor}")
                if dtype.hasobject:
                    raise refuse(version, "unsafe_weights", f"{name}: member {member} is an object array "
                                                            "(pickled objects), refused unread")
                if fp.tell() + math.prod(shape) * dtype.itemsize != info.file_size:
                    raise refuse(version, "bad_weights", f"{name}: member {member} is {info.file_size} bytes, "
                                                         f"its header describes {shape} {dtype}")
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, SyntaxError,
            NotImplementedError) as exc:
        raise refuse(version, "bad_weights", f"{name} is unreadable ({type(exc).__name__}: {exc})") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise refuse(version, "unsafe_weights", f"{name}: {exc}") from None
        raise refuse(version, "bad_weights", f"{name} is unreadable ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise refuse(version, "bad_weights", f"{name} is unreadable ({type(exc).__name__}: {exc})") from None
