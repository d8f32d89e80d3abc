"""Verify a manifest against its detached OpenPGP signature with ``gpgv``.

``gpgv`` is on every target host and does only verification, against the
keyring it is given. It reads binary keyrings only, so an ASCII-armored
keyring is de-armored here first (RFC 4880 §6: base64 with a CRC-24).
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
from pathlib import Path

from ..errors import InputError, VerificationError, shown
from .inputfile import read_bytes

GPGV = "gpgv"
GPGV_TIMEOUT_SECS = 60
ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"
#: A keyring of a few release keys is a few KiB.
MAX_KEYRING_BYTES = 1 << 20


def crc24(data: bytes) -> int:
    """The OpenPGP armor checksum."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(text: str, origin: str) -> bytes:
    """Decode one or more armored public key blocks into binary packets."""
    packets = b""
    lines = iter(text.splitlines())
    found = False
    for line in lines:
        if line.strip() != ARMOR_BEGIN:
            continue
        found = True
        for header in lines:  # armor headers end at the first empty line
            if not header.strip():
                break
        body, checksum = [], None
        for line in lines:
            line = line.strip()
            if line == ARMOR_END:
                break
            if line.startswith("=") and len(line) == 5:
                checksum = line[1:]
            else:
                body.append(line)
        else:
            raise InputError(f"{origin}: armored keyring has no {ARMOR_END!r} line")
        try:
            data = base64.b64decode("".join(body), validate=True)
        except ValueError as err:  # binascii.Error, or characters outside ASCII
            raise InputError(f"{origin}: armored keyring is not valid base64: {err}") from None
        if checksum is not None and _checksum(checksum, origin) != crc24(data).to_bytes(3, "big"):
            raise InputError(f"{origin}: armored keyring checksum does not match")
        packets += data
    if not found:
        raise InputError(f"{origin}: no {ARMOR_BEGIN!r} block in the armored keyring")
    return packets


def _checksum(line: str, origin: str) -> bytes:
    """The 3 bytes of an armor checksum line (``=`` and 4 base64 characters)."""
    try:
        return base64.b64decode(line, validate=True)
    except ValueError:  # binascii.Error, or characters outside ASCII
        raise InputError(f"{origin}: armor checksum line {shown('=' + line)} is not '=' and 4 base64 characters "
                         "(a CRC-24)") from None


def load_keyring(path: Path) -> bytes:
    """A keyring's binary packets, whether the file is binary or armored."""
    try:
        data = read_bytes(path, "an OpenPGP keyring (binary or armored)", limit=MAX_KEYRING_BYTES)
    except InputError as err:
        raise InputError(f"keyring {err}", hint="set [torcx] keyring") from None
    if not data:
        raise InputError(f"keyring {path}: file is empty; expected OpenPGP public keys")
    if data.lstrip().startswith(b"-----BEGIN"):
        return dearmor(data.decode("ascii", errors="replace"), str(path))
    return data


def verify_detached(data: bytes, signature: bytes, keyring: Path, what: str) -> None:
    """Raise VerificationError unless ``signature`` is a good signature of
    ``data`` by a key in ``keyring``."""
    if not signature.strip():
        raise VerificationError(f"{what}: the signature is empty")
    packets = load_keyring(keyring)
    with tempfile.TemporaryDirectory(prefix="torcx-tectonic-gpgv.") as home:
        work = Path(home)
        (work / "keyring.gpg").write_bytes(packets)
        (work / "data").write_bytes(data)
        (work / "data.asc").write_bytes(signature)
        try:
            result = subprocess.run(
                [GPGV, "--homedir", home, "--status-fd", "1", "--keyring", str(work / "keyring.gpg"),
                 str(work / "data.asc"), str(work / "data")],
                capture_output=True, text=True, timeout=GPGV_TIMEOUT_SECS, check=False,
            )
        except FileNotFoundError:
            raise VerificationError(f"{what}: {GPGV} is not installed; cannot verify the signature") from None
    status = result.stdout.splitlines()
    # gpgv exits 0 with VALIDSIG also for a revoked or expired key (REVKEYSIG,
    # EXPKEYSIG instead of GOODSIG): only GOODSIG and VALIDSIG and none of the
    # problems _reason knows make a good signature.
    good = any(line.startswith("[GNUPG:] GOODSIG") for line in status)
    if result.returncode != 0 or not good or not any(line.startswith("[GNUPG:] VALIDSIG") for line in status) \
            or _reason(status):
        reason = _reason(status) or " ".join(result.stderr.split()) or f"gpgv exited {result.returncode}"
        raise VerificationError(f"{what}: signature verification against {keyring} failed: {reason}")


def _reason(status: list[str]) -> str:
    for line in status:
        for word, reason in (("BADSIG", "bad signature"), ("NO_PUBKEY", "signed by a key not in the keyring"),
                             ("NODATA", "the signature file holds no signature"), ("EXPKEYSIG", "key expired"),
                             ("REVKEYSIG", "key revoked")):
            if line.startswith(f"[GNUPG:] {word}"):
                return f"{reason} ({line.removeprefix('[GNUPG:] ')})"
    return ""
