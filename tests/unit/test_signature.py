"""signature: keyrings (binary and armored), gpgv verification, every way a signature is bad."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from torcx_tectonic.edges import signature
from torcx_tectonic.errors import InputError, VerificationError

from .helpers import SIGNED_DATA, Keys

DATA = b'{"kind": "torcx-package-list-v0", "value": {"packages": [{"name": "docker"}]}}\n'


# --- keyrings ------------------------------------------------------------------


def test_binary_keyring_is_returned_as_is(keys: Keys) -> None:
    assert signature.load_keyring(keys.keyring) == keys.keyring.read_bytes()


def test_armored_keyring_dearmors_to_the_exported_binary(keys: Keys) -> None:
    assert signature.load_keyring(keys.keyring_armored) == keys.keyring.read_bytes()


def test_armored_keyring_dearmors_like_gpg_dearmor(keys: Keys) -> None:
    assert signature.load_keyring(keys.keyring_armored) == keys.keyring_gpg_dearmored.read_bytes()


def test_several_armored_blocks_are_concatenated(keys: Keys, tmp_path: Path) -> None:
    both = tmp_path / "both.asc"
    other = keys.gpg("--armor", "--export", keys.fingerprints["other"])
    both.write_bytes(keys.keyring_armored.read_bytes() + other)
    expected = keys.keyring.read_bytes() + keys.other_keyring.read_bytes()
    assert signature.load_keyring(both) == expected


def test_crc24_of_known_vectors() -> None:
    # RFC 4880 §6.1: the CRC of no data is the initial value.
    assert signature.crc24(b"") == 0xB704CE
    assert signature.crc24(b"123456789") == 0x21CF02  # CRC-24/OPENPGP check value


def _armor(body: bytes, checksum: bytes | None = None) -> str:
    crc = checksum if checksum is not None else signature.crc24(body).to_bytes(3, "big")
    return "\n".join(
        [
            signature.ARMOR_BEGIN,
            "Comment: test",
            "",
            base64.b64encode(body).decode(),
            "=" + base64.b64encode(crc).decode(),
            signature.ARMOR_END,
            "",
        ]
    )


def test_dearmor_skips_headers_and_checks_the_crc() -> None:
    assert signature.dearmor(_armor(b"\x99packets"), "k.asc") == b"\x99packets"


def test_dearmor_without_checksum_line_is_accepted() -> None:
    text = _armor(b"\x99packets").replace(
        "=" + base64.b64encode(signature.crc24(b"\x99packets").to_bytes(3, "big")).decode() + "\n", ""
    )
    assert "\n=" not in text
    assert signature.dearmor(text, "k.asc") == b"\x99packets"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(_armor(b"\x99packets", checksum=b"\x00\x00\x00"), "checksum does not match", id="bad-crc"),
        pytest.param(
            _armor(b"\x99packets").replace(signature.ARMOR_END, ""), "has no '-----END PGP PUBLIC KEY", id="no-end"
        ),
        pytest.param("just text\n", "no '-----BEGIN PGP PUBLIC KEY BLOCK-----' block", id="no-begin"),
        pytest.param(
            f"{signature.ARMOR_BEGIN}\n\nnot*base64!\n{signature.ARMOR_END}\n", "not valid base64", id="bad-base64"
        ),
        pytest.param(
            f"{signature.ARMOR_BEGIN}\n\nmZk=\n=ab!c\n{signature.ARMOR_END}\n",
            "armor checksum line '=ab!c' is not '=' and 4 base64 characters (a CRC-24)",
            id="bad-checksum-line",
        ),
        pytest.param(
            f"{signature.ARMOR_BEGIN}\n\nmZk=\n=a=bc\n{signature.ARMOR_END}\n", "armor checksum line '=a=bc'",
            id="checksum-padding-inside",
        ),
        pytest.param(
            f"{signature.ARMOR_BEGIN}\n\n\ufeffmZk=\n{signature.ARMOR_END}\n", "not valid base64", id="non-ascii-body"
        ),
        pytest.param(
            f"{signature.ARMOR_BEGIN}\n\nmZk=\n=é123\n{signature.ARMOR_END}\n", "armor checksum line '=é123'",
            id="non-ascii-checksum",
        ),
    ],
)
def test_malformed_armor_is_an_input_error_naming_the_keyring(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        signature.dearmor(text, "/etc/torcx-tectonic/keyring.asc")
    assert expected in str(caught.value)
    assert "/etc/torcx-tectonic/keyring.asc" in str(caught.value)


def test_missing_keyring_is_an_input_error_with_a_hint(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gpg"
    with pytest.raises(InputError) as caught:
        signature.load_keyring(missing)
    message = str(caught.value)
    assert f"keyring {missing}: missing; expected an OpenPGP keyring" in message
    assert "set [torcx] keyring" in message


def test_empty_keyring_is_an_input_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="file is empty; expected OpenPGP public keys"):
        signature.load_keyring(empty)


# --- verification ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["keyring", "keyring_armored"])
def test_good_signature_verifies_with_binary_and_armored_keyrings(keys: Keys, which: str) -> None:
    signature.verify_detached(DATA, keys.sign(DATA), getattr(keys, which), "manifest")


def _verification_error(data: bytes, sig: bytes, keyring: Path) -> str:
    with pytest.raises(VerificationError) as caught:
        signature.verify_detached(data, sig, keyring, "manifest for amd64-usr 1632.3.0")
    message = str(caught.value)
    assert message.startswith("manifest for amd64-usr 1632.3.0: ")
    return message


def test_tampered_data_is_a_bad_signature(keys: Keys) -> None:
    message = _verification_error(DATA + b" ", keys.sign(DATA), keys.keyring)
    assert f"signature verification against {keys.keyring} failed: bad signature (BADSIG" in message


def test_signature_by_a_key_not_in_the_keyring_is_rejected(keys: Keys) -> None:
    message = _verification_error(DATA, keys.sign(DATA, key="other"), keys.keyring)
    assert "signed by a key not in the keyring (NO_PUBKEY" in message


def test_keyring_without_the_signing_key_rejects_a_good_signature(keys: Keys) -> None:
    message = _verification_error(DATA, keys.sign(DATA), keys.other_keyring)
    assert "NO_PUBKEY" in message


@pytest.mark.parametrize("empty", [b"", b"  \n\t\n"], ids=["empty", "blank"])
def test_empty_signature_is_rejected_before_gpgv_runs(empty: bytes, tmp_path: Path) -> None:
    # the keyring does not even exist: the empty signature is the error reported
    message = _verification_error(DATA, empty, tmp_path / "missing.gpg")
    assert "the signature is empty" in message


def test_a_file_that_is_not_a_signature_is_rejected(keys: Keys) -> None:
    message = _verification_error(DATA, b"this is not an OpenPGP signature\n", keys.keyring)
    assert "the signature file holds no signature (NODATA" in message


def test_signature_of_other_data_is_rejected(keys: Keys) -> None:
    message = _verification_error(DATA, keys.sign(b"another document"), keys.keyring)
    assert "BADSIG" in message


def test_signature_by_a_revoked_key_is_rejected(keys: Keys) -> None:
    message = _verification_error(SIGNED_DATA, keys.revoked_signature, keys.revoked_keyring)
    assert "key revoked (REVKEYSIG" in message


def test_signature_by_an_expired_key_is_rejected(keys: Keys) -> None:
    message = _verification_error(SIGNED_DATA, keys.expired_signature, keys.expired_keyring)
    assert "key expired (EXPKEYSIG" in message


def test_missing_keyring_with_a_signature_is_an_input_error(keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.gpg: missing"):
        signature.verify_detached(DATA, keys.sign(DATA), tmp_path / "missing.gpg", "manifest")


def test_missing_gpgv_is_a_verification_error(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signature, "GPGV", "/nonexistent/gpgv")
    with pytest.raises(VerificationError, match="manifest: /nonexistent/gpgv is not installed"):
        signature.verify_detached(DATA, keys.sign(DATA), keys.keyring, "manifest")


def test_verification_leaves_no_temporary_files(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    signature.verify_detached(DATA, keys.sign(DATA), keys.keyring, "manifest")
    with pytest.raises(VerificationError):
        signature.verify_detached(DATA + b"x", keys.sign(DATA), keys.keyring, "manifest")
    assert list(tmp_path.iterdir()) == []
