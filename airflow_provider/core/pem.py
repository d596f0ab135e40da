"""PEM and OpenSSH armoured text, with its line breaks put back when a form took them out.

A key pasted into a one-line input arrives with its line breaks turned into spaces, or dropped:
``-----BEGIN OPENSSH PRIVATE KEY----- b3Bl... -----END OPENSSH PRIVATE KEY-----``. That is still
unambiguous (base64 has no spaces and the armour lines are fixed), so :func:`parse_blocks` reads
it back: the BEGIN line, any ``Name: value`` headers (a traditional encrypted PEM key), the base64
body and the END line; :attr:`PemBlock.text` writes it out again, the body wrapped at 70
characters for OpenSSH keys and 64 for PEM. Whatever cannot be read raises
:class:`~airflow_provider.core.errors.ConfigurationError` naming the field and the problem.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from airflow_provider.core.errors import ConfigurationError

__all__ = ["OPENSSH_WIDTH", "PEM_WIDTH", "PemBlock", "openssh_strings", "parse_blocks"]

OPENSSH_WIDTH = 70
"""ssh-keygen wraps an OpenSSH private key's body at 70 characters."""
PEM_WIDTH = 64
"""RFC 7468 wraps a PEM body at 64 characters."""
OPENSSH_LABEL = "OPENSSH PRIVATE KEY"
_OPENSSH_MAGIC = b"openssh-key-v1\0"
_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9]+(?: [A-Z0-9]+)*)-----")
_END = re.compile(r"-----END ([A-Z0-9]+(?: [A-Z0-9]+)*)-----")
_HEADER = re.compile(r"([A-Za-z][A-Za-z0-9-]*):[ \t]*")
# A flattened header value ends where the next header or the body begins: these say where.
_PROC_TYPE = re.compile(r"\d+,(?:ENCRYPTED|MIC-ONLY|MIC-CLEAR|CRL)")
_IV_HEX_DIGITS = {"AES-128-CBC": 32, "AES-192-CBC": 32, "AES-256-CBC": 32, "DES-EDE3-CBC": 16, "DES-CBC": 16}
_BASE64_CHARACTER = re.compile(r"[A-Za-z0-9+/=]")


@dataclass(frozen=True)
class PemBlock:
    """One armoured block: ``-----BEGIN <label>-----``, headers, base64 body, ``-----END <label>-----``.

    :param label: what the BEGIN line names, e.g. ``"OPENSSH PRIVATE KEY"`` or ``"CERTIFICATE"``.
    :param headers: ``(name, value)`` pairs before the body (``Proc-Type``, ``DEK-Info``).
    :param body: the base64 body without whitespace.
    """

    label: str
    headers: tuple[tuple[str, str], ...]
    body: str

    @property
    def data(self) -> bytes:
        """The decoded body."""
        return base64.b64decode(self.body)

    @property
    def text(self) -> str:
        """The block with its line breaks: body lines of 70 (OpenSSH) or 64 (PEM) characters."""
        width = OPENSSH_WIDTH if self.label == OPENSSH_LABEL else PEM_WIDTH
        lines = [f"-----BEGIN {self.label}-----"]
        if self.headers:
            lines += [f"{name}: {value}" for name, value in self.headers] + [""]
        lines += [self.body[i:i + width] for i in range(0, len(self.body), width)]
        return "\n".join([*lines, f"-----END {self.label}-----"]) + "\n"

    @property
    def encrypted(self) -> bool:
        """Whether the key is protected by a passphrase (OpenSSH, PKCS#8 or traditional PEM)."""
        if self.label == "ENCRYPTED PRIVATE KEY":
            return True
        if any(name.lower() == "proc-type" and value.endswith(",ENCRYPTED") for name, value in self.headers):
            return True
        if self.label == OPENSSH_LABEL:
            strings = openssh_strings(self.data)
            return len(strings) >= 2 and strings[1] == b"bcrypt"  # the KDF OpenSSH encrypts keys with
        return False


def openssh_strings(data: bytes) -> list[bytes]:
    """The clear part of an OpenSSH private key: cipher, KDF name, KDF options, then the first public
    key's type (``[]`` when ``data`` is not such a key, fewer when it is cut short).

    :param data: the decoded body of an ``OPENSSH PRIVATE KEY`` block.
    """
    if not data.startswith(_OPENSSH_MAGIC):
        return []
    strings: list[bytes] = []
    position = len(_OPENSSH_MAGIC)
    for step in range(4):
        if step == 3:
            position += 8  # the number of keys, then the public key's length; its first string is the type
        length = int.from_bytes(data[position:position + 4], "big")
        if position + 4 + length > len(data) or length > 4096:
            break
        strings.append(data[position + 4:position + 4 + length])
        position += 4 + length
    return strings


def parse_blocks(text: str, field: str, what: str, fix: str) -> list[PemBlock]:
    """Read every armoured block of ``text``, also when its line breaks became spaces or vanished.

    Text before a BEGIN line or after the last END line is ignored (as openssl and ssh do).

    :param text: the field's value.
    :param field: the field's name, for errors (``connection 'x' extra.private_key``).
    :param what: what the field holds, for errors: ``"private key"``, ``"certificate"``.
    :param fix: what to write instead, for errors.
    :raises ConfigurationError: a BEGIN or END line is missing, they differ, or a body is not base64.
    """
    text = text.strip()
    if "\n" not in text and "\\n" in text:  # line breaks written as \n escapes (JSON pasted twice)
        text = text.replace("\\r", "").replace("\\n", "\n")
    blocks: list[PemBlock] = []
    position = 0
    while True:
        begin = _BEGIN.search(text, position)
        if begin is None:
            if blocks:
                return blocks
            raise ConfigurationError(field, f"not a PEM or OpenSSH {what}: {_missing_begin(text)}", fix)
        end = _END.search(text, begin.end())
        if end is None:
            raise ConfigurationError(field, f"the END line of the {begin.group(1)} is missing (the text was cut "
                                            "short?).", fix)
        if end.group(1) != begin.group(1):
            raise ConfigurationError(field, f"begins with BEGIN {begin.group(1)} but ends with END {end.group(1)}.",
                                     fix)
        headers, body = _headers(text[begin.end():end.start()], field, begin.group(1), fix)
        blocks.append(PemBlock(begin.group(1), headers, _base64_body(body, field, begin.group(1), what, fix)))
        position = end.end()


def _missing_begin(text: str) -> str:
    """Why a text without a BEGIN line is not armoured, as precisely as can be told."""
    if re.match(r"(ssh-|ecdsa-sha2-|sk-)\S+ AAAA", text):
        return "this is a public key (as in authorized_keys), not the private key."
    if "-----END" in text:
        return "the BEGIN line is missing (only an END line is there)."
    return "the BEGIN line is missing."


def _headers(inner: str, field: str, label: str, fix: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """Split the text between the armour lines into ``Name: value`` headers and the body."""
    headers: list[tuple[str, str]] = []
    rest = inner.strip()
    flattened = "\n" not in rest
    while (match := _HEADER.match(rest)) is not None:  # base64 has no ':', so this is a header
        name, rest = match.group(1), rest[match.end():]
        if not flattened:
            value, _, rest = rest.partition("\n")
        else:
            value_match = _flattened_value(name, rest)
            if value_match is None:
                raise ConfigurationError(field, f"the {label}'s header {name!r} lost its line break and where it "
                                                "ends cannot be told.", "paste the key with its line breaks.")
            value, rest = rest[:value_match], rest[value_match:]
        headers.append((name, value.strip()))
        rest = rest.lstrip()
    return tuple(headers), rest


def _flattened_value(name: str, rest: str) -> int | None:
    """Where a header value ends when the header's line break is gone, or None when it cannot be told."""
    if name.lower() == "proc-type":
        match = _PROC_TYPE.match(rest)
        return match.end() if match else None
    if name.lower() == "dek-info":
        cipher, comma, _ = rest.partition(",")
        digits = _IV_HEX_DIGITS.get(cipher)
        if comma and digits and re.fullmatch(r"[0-9A-Fa-f]+", rest[len(cipher) + 1:len(cipher) + 1 + digits]):
            return len(cipher) + 1 + digits
    spaced = re.match(r"\S+(?=\s)", rest)
    return spaced.end() if spaced else None


def _base64_body(body: str, field: str, label: str, what: str, fix: str) -> str:
    """The body without whitespace, once it is known to be base64 (else the character or padding at fault)."""
    body = re.sub(r"\s+", "", body)
    noun = "key" if "key" in what else what
    if not body:
        raise ConfigurationError(field, f"the {label} has nothing between its BEGIN and END lines.", fix)
    stray = next((c for c in body if not _BASE64_CHARACTER.match(c)), None)
    if stray is not None:
        raise ConfigurationError(field, f"the {noun} body is not valid base64: it contains {stray!r} (at character "
                                        f"{body.index(stray) + 1} of the {label}'s body).", fix)
    try:
        base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(field, f"the {noun} body is not valid base64 ({exc}): a part of the {label} is "
                                        "missing or was changed.", fix) from None
    return body
