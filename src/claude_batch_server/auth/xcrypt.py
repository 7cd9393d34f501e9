"""The system's libxcrypt through ctypes: yescrypt, sha512/256, md5 and bcrypt hashes.

The stdlib `crypt` module is gone in Python 3.13, so we call `crypt_rn` ourselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hmac

# sizeof(struct crypt_data) in libxcrypt; crypt_rn is told the size it is given.
_CRYPT_DATA_SIZE = 32768


@functools.cache
def _libcrypt() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    library = ctypes.CDLL(name, use_errno=True)
    library.crypt_rn.restype = ctypes.c_char_p
    library.crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    return library


def crypt(phrase: str, setting: str) -> str | None:
    """Hash `phrase` with the method and salt in `setting`; None where libxcrypt refuses."""
    if "\0" in phrase or "\0" in setting:
        return None
    data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    result = _libcrypt().crypt_rn(phrase.encode(), setting.encode(), data, _CRYPT_DATA_SIZE)
    if not result or result.startswith(b"*"):
        return None
    return bytes(result).decode()


def verify(password: str, stored_hash: str) -> bool:
    """True when `password` hashes to `stored_hash`; compared in constant time."""
    computed = crypt(password, stored_hash)
    if computed is None:
        return False
    return hmac.compare_digest(computed.encode(), stored_hash.encode())
