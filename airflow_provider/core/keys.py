"""Private keys and certificates read before anything connects, with errors that name the real problem.

:func:`ssh_private_key` reads an SSH private key (OpenSSH, traditional PEM or PKCS#8 text) with
paramiko; :func:`tls_certificates` and :func:`tls_private_key` read a Docker daemon's TLS material
with ``cryptography``. Each accepts text whose line breaks a one-line form field turned into spaces
or dropped (see :mod:`airflow_provider.core.pem`), returns it with its line breaks put back, and
raises :class:`~airflow_provider.core.errors.ConfigurationError` naming the field, what is wrong
(no BEGIN line, encrypted without a passphrase, a body that is not base64, a certificate pasted
where the key goes, ...) and the fix.
"""

from __future__ import annotations

import io
from typing import Any

import paramiko

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.pem import OPENSSH_LABEL, PemBlock, openssh_strings, parse_blocks

__all__ = ["certificate_matches_key", "ssh_private_key", "tls_certificates", "tls_private_key"]

SSH_KEY_FIX = ("paste the whole private key file (e.g. the output of cat ~/.ssh/id_ed25519), its BEGIN and END lines "
               "included.")
_PKCS8 = ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
_SSH_PEM_CLASSES: dict[str, type[paramiko.PKey]] = {"RSA PRIVATE KEY": paramiko.RSAKey,
                                                    "EC PRIVATE KEY": paramiko.ECDSAKey}
_UNUSABLE_KEY_TYPES = {"ssh-dss": "a DSA key, which paramiko (like OpenSSH 9.8) no longer supports",
                       "DSA PRIVATE KEY": "a DSA key, which paramiko (like OpenSSH 9.8) no longer supports"}


def ssh_private_key(text: str, passphrase: str | None, field: str, passphrase_field: str = "passphrase",
                    fix: str = SSH_KEY_FIX) -> tuple[str, paramiko.PKey]:
    """Read an SSH private key; return its text with line breaks put back, and the key.

    :param text: the key as pasted: OpenSSH (``BEGIN OPENSSH PRIVATE KEY``), traditional PEM
        (``BEGIN RSA PRIVATE KEY``, ``BEGIN EC PRIVATE KEY``) or PKCS#8 (``BEGIN PRIVATE KEY``).
    :param passphrase: the key's passphrase, if it has one.
    :param field: the field's name, for errors.
    :param passphrase_field: the passphrase field's name, for the fix of an encrypted key.
    :param fix: what to write instead, for errors.
    :raises ConfigurationError: naming the field and the problem.
    """
    if text.lstrip().startswith("PuTTY-User-Key-File"):
        raise ConfigurationError(field, "is a PuTTY key (.ppk), which paramiko cannot read.",
                                 "convert it: puttygen key.ppk -O private-openssh -o key, and paste that.")
    block = _single_key_block(parse_blocks(text, field, "private key", fix), field, fix)
    if block.encrypted and not passphrase:
        raise ConfigurationError(field, "is encrypted and no passphrase was given.",
                                 f"set {passphrase_field} to the key's passphrase, or paste a key without one.")
    key_class, key_text = _paramiko_input(block, passphrase, field, passphrase_field, fix)
    try:
        key = key_class.from_private_key(io.StringIO(key_text), password=passphrase or None)
    except paramiko.PasswordRequiredException:
        raise ConfigurationError(field, "is encrypted and no passphrase was given.",
                                 f"set {passphrase_field} to the key's passphrase.") from None
    except Exception as exc:  # paramiko reports damaged key data with several exception types
        raise _unreadable(block, exc, field, passphrase_field, fix) from exc
    return block.text, key


def tls_certificates(text: str, field: str, fix: str) -> str:
    """Check PEM certificates (one, or a chain); return them with line breaks put back.

    :param text: the PEM text.
    :param field: the field's name, for errors.
    :param fix: what to write instead, for errors.
    :raises ConfigurationError: naming the field and the problem.
    """
    from cryptography import x509

    blocks = parse_blocks(text, field, "certificate", fix)
    for block in blocks:
        if block.label != "CERTIFICATE":
            raise ConfigurationError(field, f"holds a {block.label.lower()} (BEGIN {block.label}), not a "
                                            "certificate.", fix)
        try:
            x509.load_pem_x509_certificate(block.text.encode())
        except ValueError as exc:
            raise ConfigurationError(field, f"is not a valid certificate ({exc}).", fix) from exc
    return "".join(block.text for block in blocks)


def tls_private_key(text: str, field: str, fix: str) -> tuple[str, Any]:
    """Check an unencrypted PEM private key for a TLS client; return its text and the key.

    :param text: the PEM text.
    :param field: the field's name, for errors.
    :param fix: what to write instead, for errors.
    :raises ConfigurationError: naming the field and the problem.
    """
    from cryptography.hazmat.primitives import serialization

    block = _single_key_block(parse_blocks(text, field, "private key", fix), field, fix)
    if block.label == OPENSSH_LABEL:
        raise ConfigurationError(field, "is an OpenSSH key; a TLS client needs a PEM key (BEGIN PRIVATE KEY).",
                                 "paste the key that belongs to the client certificate (e.g. key.pem).")
    if block.encrypted:
        raise ConfigurationError(field, "is encrypted; the Docker client cannot use a key with a passphrase.",
                                 "decrypt it (openssl pkey -in key.pem -out key-plain.pem) and paste that.")
    try:
        key = serialization.load_pem_private_key(block.text.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(field, f"cannot be read as a private key ({exc}).", fix) from exc
    return block.text, key


def certificate_matches_key(certificate_text: str, key: Any) -> bool:
    """Whether the first certificate of ``certificate_text`` was issued for ``key``.

    :param certificate_text: PEM certificates (line breaks in place).
    :param key: a ``cryptography`` private key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certificate = x509.load_pem_x509_certificate(certificate_text.encode())
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki))


def _single_key_block(blocks: list[PemBlock], field: str, fix: str) -> PemBlock:
    keys = [block for block in blocks if block.label.endswith("PRIVATE KEY")]
    if not keys:
        label = blocks[0].label
        raise ConfigurationError(field, f"holds a {label.lower()} (BEGIN {label}), not a private key.", fix)
    if len(keys) > 1:
        raise ConfigurationError(field, f"holds {len(keys)} private keys.", "paste only one key.")
    return keys[0]


def _paramiko_input(block: PemBlock, passphrase: str | None, field: str, passphrase_field: str,
                    fix: str) -> tuple[type[paramiko.PKey], str]:
    """The paramiko key class for ``block`` and the text to give it (PKCS#8 becomes OpenSSH text)."""
    if block.label == OPENSSH_LABEL:
        strings = openssh_strings(block.data)
        key_type = strings[3].decode("ascii", "replace") if len(strings) == 4 else ""
        unusable = _UNUSABLE_KEY_TYPES.get(key_type) or (
            "a security-key (FIDO) key, which needs its hardware token" if key_type.startswith("sk-") else None)
        if unusable:
            raise ConfigurationError(field, f"is {unusable}.", "use an Ed25519, ECDSA or RSA key.")
        classes = {"ssh-ed25519": paramiko.Ed25519Key, "ssh-rsa": paramiko.RSAKey}
        key_class = paramiko.ECDSAKey if key_type.startswith("ecdsa-sha2-") else classes.get(key_type)
        if key_class is None:
            what = f"names an unknown key type {key_type!r}" if key_type else "has no readable key type"
            raise ConfigurationError(field, f"is damaged: it {what} (part of it is missing or changed).", fix)
        return key_class, block.text
    if block.label in _SSH_PEM_CLASSES:
        return _SSH_PEM_CLASSES[block.label], block.text
    if block.label in _PKCS8:
        return _pkcs8_as_openssh(block, passphrase, field, passphrase_field, fix)
    unusable = _UNUSABLE_KEY_TYPES.get(block.label, f"a {block.label.lower()}, which SSH cannot use")
    raise ConfigurationError(field, f"is {unusable}.", "use an Ed25519, ECDSA or RSA key.")


def _pkcs8_as_openssh(block: PemBlock, passphrase: str | None, field: str, passphrase_field: str,
                      fix: str) -> tuple[type[paramiko.PKey], str]:
    """paramiko reads no PKCS#8: decrypt it with ``cryptography`` and hand paramiko OpenSSH text."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        password = passphrase.encode() if passphrase and block.encrypted else None
        key = serialization.load_pem_private_key(block.text.encode(), password)
    except (ValueError, TypeError) as exc:
        raise _unreadable(block, exc, field, passphrase_field, fix) from exc
    classes: list[tuple[type[Any], type[paramiko.PKey]]] = [
        (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key), (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
        (rsa.RSAPrivateKey, paramiko.RSAKey)]
    for cryptography_class, key_class in classes:
        if isinstance(key, cryptography_class):
            text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption()).decode()
            return key_class, text
    raise ConfigurationError(field, f"is a {type(key).__name__.lstrip('_')}, which SSH cannot use.",
                             "use an Ed25519, ECDSA or RSA key.")


def _unreadable(block: PemBlock, exc: Exception, field: str, passphrase_field: str, fix: str) -> ConfigurationError:
    reason = str(exc) or type(exc).__name__
    if block.encrypted:
        return ConfigurationError(field, f"could not be decrypted ({reason}): the passphrase is wrong, or the key is "
                                         "damaged.", f"check {passphrase_field}; else {fix}")
    return ConfigurationError(field, f"cannot be read as a private key ({reason}): part of it is damaged or "
                                     "missing.", fix)
