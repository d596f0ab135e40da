"""Connection secrets and pasted keys (issue 12, items 8 and 9).

* Every secret field of every connection type is redacted by Airflow's REST API: the connection is
  serialised by the API's own response model (``ConnectionResponse``, the redaction the Edit dialog
  and ``GET /api/v2/connections/...`` go through; tests/system/test_connection_redaction.py does the
  same against a real ``airflow api-server``).
* Key and PEM fields are multi-line in the form; a key whose line breaks a one-line input turned into
  spaces, or dropped, is rebuilt byte for byte; a bad key or certificate is a ConfigurationError
  naming the field and the real problem before anything connects.

Keys come from ssh-keygen and ``cryptography``, certificates from ``cryptography``; the SSH
connection is made to the loopback sshd of scripts/components.sh. Nothing is mocked.
"""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import airflow_provider
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.keys import ssh_private_key
from airflow_provider.hooks.docker_options import docker_target_settings
from airflow_provider.hooks.ssh_options import ssh_target_arguments
from tests.ssh_hosts import SSHHost

PASSPHRASE = "correct horse battery"


def _connection_types() -> dict[str, dict[str, Any]]:
    return {c["connection-type"]: c for c in airflow_provider.get_provider_info()["connection-types"]}


def _flattened(text: str) -> dict[str, str]:
    """``text`` as one-line inputs and copy-paste mangle it."""
    return {"spaces": text.replace("\n", " "), "nothing": text.replace("\n", ""),
            "escaped": text.replace("\n", "\\n"), "crlf": text.replace("\n", "\r\n")}


# ---------------------------------------------------------------------- keys and certificates
@pytest.fixture(scope="module")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Private key files of every format an SSH connection accepts, by name."""
    folder = tmp_path_factory.mktemp("keys")
    made = {"ed25519": ("-t", "ed25519", "-N", ""), "ed25519_encrypted": ("-t", "ed25519", "-N", PASSPHRASE),
            "ecdsa_pkcs8": ("-t", "ecdsa", "-m", "PKCS8", "-N", ""),
            "rsa_pem_encrypted": ("-t", "rsa", "-b", "2048", "-m", "PEM", "-N", PASSPHRASE)}
    for name, options in made.items():
        subprocess.run(["ssh-keygen", "-q", *options, "-C", "", "-f", str(folder / name)], check=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "rsa_pem").write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                                           serialization.NoEncryption()))
    (folder / "rsa_pem.pub").write_bytes(rsa_key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                          serialization.PublicFormat.OpenSSH))
    return {name: folder / name for name in (*made, "rsa_pem")}


def _certificate(key: Any, subject: str, issuer_key: Any, issuer: str, ca: bool) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .sign(issuer_key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def tls() -> dict[str, str]:
    """A CA, a client certificate it signed, the client's key (PKCS#8), and the same key encrypted."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "ca": _certificate(ca_key, "test CA", ca_key, "test CA", ca=True),
        "cert": _certificate(client_key, "client", ca_key, "test CA", ca=False),
        "key": client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode(),
        "key_encrypted": client_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.BestAvailableEncryption(b"pw")).decode(),
        "other_key": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()).decode(),
    }


# ---------------------------------------------------------------------- item 8: redaction
def _serialized_by_the_api(conn_type: str, password: str | None, extra: dict[str, Any]) -> str:
    """The connection as Airflow's REST API returns it (``GET /api/v2/connections/{id}``)."""
    from airflow.api_fastapi.core_api.datamodels.connections import ConnectionResponse
    from airflow.models.connection import Connection

    connection = Connection(conn_id="walked", conn_type=conn_type, host="h", login="user", password=password,
                            extra=json.dumps(extra))
    return ConnectionResponse.model_validate(connection).model_dump_json()


def test_every_declared_secret_field_is_a_field_of_its_connection_type() -> None:
    types = _connection_types()
    assert set(airflow_provider.SECRET_FIELDS) == set(types)
    for conn_type, secrets in airflow_provider.SECRET_FIELDS.items():
        fields = types[conn_type]["conn-fields"]
        hidden = types[conn_type]["ui-field-behaviour"]["hidden-fields"]
        for name in secrets:
            assert name in fields or (name == "password" and "password" not in hidden), f"{conn_type}.{name}"
        passwords = {name for name, f in fields.items() if f["schema"].get("format") == "password"}
        assert passwords <= set(secrets), f"{conn_type}: password inputs not declared secret"


@pytest.mark.parametrize("conn_type", sorted(airflow_provider.SECRET_FIELDS))
@pytest.mark.parametrize("prefixed", [False, True], ids=["field", "airflow2_prefixed_field"])
def test_every_secret_field_is_redacted_by_the_rest_api(conn_type: str, prefixed: bool) -> None:
    fields = _connection_types()[conn_type]["conn-fields"]
    secrets = airflow_provider.SECRET_FIELDS[conn_type]
    values = {name: f"value-of-{conn_type}-{name}-7731" for name in fields}
    extra = {(f"extra__{conn_type}__{name}" if prefixed else name): value for name, value in values.items()}
    password = f"value-of-{conn_type}-password-7731" if "password" in secrets else None
    shown = _serialized_by_the_api(conn_type, password, extra)
    for name in secrets:
        secret = password if name == "password" else values[name]
        assert secret is not None and secret not in shown, f"{conn_type}.{name} is shown in clear: {shown}"
    shown_extra = json.loads(json.loads(shown)["extra"])
    for name, value in values.items():  # the walk is real: every other field is shown as it is
        expected = "***" if name in secrets else value
        assert shown_extra[f"extra__{conn_type}__{name}" if prefixed else name] == expected, name


def test_the_former_docker_key_field_is_still_read_and_its_rename_is_asked_for(
        tls: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    extra = {"tls_client_cert": tls["cert"], "tls_client_key": tls["key"]}
    with caplog.at_level(logging.WARNING):
        settings = docker_target_settings("old", "tcp://127.0.0.1:2376", None, None, extra)
    assert Path(settings["tls"]["client_key"]).read_text() == tls["key"]
    assert "rename it tls_client_private_key" in caplog.text
    assert tls["key"].splitlines()[1] not in caplog.text
    with pytest.raises(ConfigurationError) as both:
        docker_target_settings("old", "tcp://127.0.0.1:2376", None, None,
                               {**extra, "tls_client_private_key": tls["other_key"]})
    assert both.value.field == "connection 'old' extra.tls_client_key"
    assert "keep only tls_client_private_key" in both.value.fix


# ---------------------------------------------------------------------- item 9: the form
def test_key_and_pem_fields_are_multi_line_in_the_form() -> None:
    types = _connection_types()
    multi_line = {("training_ssh", "private_key"), ("training_mpi", "private_key"), ("training_slurm", "private_key"),
                  ("training_slurm", "setup"),
                  ("training_docker", "tls_ca_cert"), ("training_docker", "tls_client_cert"),
                  ("training_docker", "tls_client_private_key")}
    for conn_type, name in multi_line:
        assert types[conn_type]["conn-fields"][name]["schema"]["format"] == "multiline", (conn_type, name)
    for conn_type, connection in types.items():  # and nothing else is
        for name, field in connection["conn-fields"].items():
            assert (field["schema"].get("format") == "multiline") == ((conn_type, name) in multi_line)


# ---------------------------------------------------------------------- item 9: SSH keys
def _fingerprint(key_file: Path) -> str:
    """``SHA256:...`` of the key's public half, as ssh-keygen computes it."""
    return subprocess.run(["ssh-keygen", "-l", "-f", f"{key_file}.pub"], capture_output=True, text=True,
                          check=True).stdout.split()[1]


KEY_CASES = ["ed25519", "ed25519_encrypted", "ecdsa_pkcs8", "rsa_pem", "rsa_pem_encrypted"]


@pytest.mark.parametrize("name", KEY_CASES)
def test_a_flattened_ssh_key_is_rebuilt_byte_for_byte(ssh_keys: dict[str, Path], name: str) -> None:
    original = ssh_keys[name].read_text()
    passphrase = PASSPHRASE if name.endswith("encrypted") else None
    expected = _fingerprint(ssh_keys[name])
    for how, text in _flattened(original).items():
        extra = {"private_key": text, **({"passphrase": passphrase} if passphrase else {})}
        settings = ssh_target_arguments("box", "h", 22, "u", None, extra)["settings"]
        assert settings["private_key"] == original, f"{name} with line breaks as {how}"
        assert ssh_private_key(settings["private_key"], passphrase, "f")[1].fingerprint == expected


def _bad_keys(keys: dict[str, Path], tls: dict[str, str]) -> list[tuple[str, dict[str, str], str, str]]:
    """(case, extra, what the problem says, what the fix says)."""
    ed25519 = keys["ed25519"].read_text()
    lines = ed25519.splitlines()
    body = "".join(lines[1:-1])
    public = keys["ed25519"].with_suffix(".pub").read_text()
    return [
        ("no BEGIN line", {"private_key": "\n".join(lines[1:])}, "not a PEM or OpenSSH private key: the BEGIN line is "
         "missing", "BEGIN and END lines included"),
        ("only the body", {"private_key": body}, "the BEGIN line is missing", "BEGIN and END"),
        ("no END line", {"private_key": "\n".join(lines[:-1])}, "the END line of the OPENSSH PRIVATE KEY is missing",
         "BEGIN and END"),
        ("END of another kind", {"private_key": ed25519.replace("END OPENSSH", "END RSA")},
         "begins with BEGIN OPENSSH PRIVATE KEY but ends with END RSA PRIVATE KEY", "BEGIN and END"),
        ("body not base64", {"private_key": ed25519.replace(lines[2], lines[2][:10] + "#" + lines[2][11:])},
         "the key body is not valid base64: it contains '#'", "BEGIN and END"),
        ("a character lost", {"private_key": ed25519.replace(lines[2], lines[2][1:])},
         "the key body is not valid base64", "BEGIN and END"),
        ("characters lost", {"private_key": ed25519.replace(lines[2], lines[2][:20] + lines[2][24:])},
         "part of it is damaged or missing", "BEGIN and END"),
        ("header damaged", {"private_key": ed25519.replace(lines[1], lines[1][:20] + lines[1][24:])},
         "is damaged: it has no readable key type", "BEGIN and END"),
        ("encrypted, no passphrase", {"private_key": keys["ed25519_encrypted"].read_text()},
         "is encrypted and no passphrase was given", "set extra.passphrase"),
        ("PEM encrypted, no passphrase", {"private_key": keys["rsa_pem_encrypted"].read_text().replace("\n", " ")},
         "is encrypted and no passphrase was given", "set extra.passphrase"),
        ("wrong passphrase", {"private_key": keys["ed25519_encrypted"].read_text(), "passphrase": "wrong"},
         "could not be decrypted", "check extra.passphrase"),
        ("public key", {"private_key": public}, "this is a public key (as in authorized_keys), not the private key",
         "BEGIN and END"),
        ("certificate", {"private_key": tls["cert"]}, "holds a certificate (BEGIN CERTIFICATE), not a private key",
         "BEGIN and END"),
        ("a path", {"private_key": str(keys["ed25519"])}, "is a path, not a key", "key_file"),
        ("PuTTY", {"private_key": "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n"}, "PuTTY",
         "puttygen"),
    ]


def test_each_bad_ssh_key_is_a_configuration_error_naming_the_problem(ssh_keys: dict[str, Path],
                                                                     tls: dict[str, str]) -> None:
    for case, extra, problem, fix in _bad_keys(ssh_keys, tls):
        with pytest.raises(ConfigurationError) as raised:
            ssh_target_arguments("box", "h", 22, "u", None, extra)
        assert raised.value.field == "connection 'box' extra.private_key", case
        assert problem in raised.value.problem, f"{case}: {raised.value}"
        assert fix in raised.value.fix, f"{case}: {raised.value}"
        secret_line = ssh_keys["ed25519"].read_text().splitlines()[2]
        assert secret_line not in str(raised.value), f"{case}: the key is echoed in the error"


def test_a_key_file_is_checked_too(ssh_keys: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ssh_target_arguments("box", "h", 22, "u", None, {"key_file": str(ssh_keys["ed25519_encrypted"])})
    assert raised.value.field == "connection 'box' extra.key_file"
    assert raised.value.problem == "is encrypted and no passphrase was given."
    with pytest.raises(ConfigurationError, match="this is a public key") as public:
        ssh_target_arguments("box", "h", 22, "u", None, {"key_file": f"{ssh_keys['ed25519']}.pub"})
    assert "not ed25519.pub" in public.value.fix
    arguments = ssh_target_arguments("box", "h", 22, "u", None,
                                     {"key_file": str(ssh_keys["rsa_pem_encrypted"]), "passphrase": PASSPHRASE})
    assert arguments["settings"]["key_file"] == str(ssh_keys["rsa_pem_encrypted"])


def test_the_mpi_hosts_key_is_checked_with_the_mpi_connection(ssh_keys: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.hooks.compute import MPIComputeHook

    extra = {"hosts": "10.0.0.1:2", "private_key": ssh_keys["ed25519_encrypted"].read_text().replace("\n", " ")}
    monkeypatch.setenv("AIRFLOW_CONN_MPI_BOX", json.dumps({"conn_type": "training_mpi", "login": "u",
                                                           "extra": extra}))
    with pytest.raises(ConfigurationError) as raised:
        MPIComputeHook("mpi_box").get_target()
    assert raised.value.field == "connection 'mpi_box' extra.private_key"
    assert raised.value.problem == "is encrypted and no passphrase was given."
    monkeypatch.setenv("AIRFLOW_CONN_MPI_BOX", json.dumps({"conn_type": "training_mpi", "login": "u",
                                                           "extra": {**extra, "passphrase": PASSPHRASE}}))
    target = MPIComputeHook("mpi_box").get_target()
    assert target.nodes[0].settings.private_key == ssh_keys["ed25519_encrypted"].read_text()  # type: ignore[attr-defined]


def test_a_flattened_key_connects_to_a_real_ssh_host(ssh_loopback: SSHHost, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.hooks.compute import SSHComputeHook

    flattened = ssh_loopback.key_path.read_text().replace("\n", " ")
    monkeypatch.setenv("AIRFLOW_CONN_FLAT_KEY", json.dumps({
        "conn_type": "training_ssh", "host": ssh_loopback.host, "port": ssh_loopback.port,
        "login": ssh_loopback.username, "extra": {"private_key": flattened, "host_key": ssh_loopback.host_public_key}}))
    target = SSHComputeHook("flat_key").get_target()
    assert isinstance(target, SSHTarget)
    try:
        _, stdout, _ = target.connection.client.exec_command("id -un")
        assert stdout.read().decode().strip() == ssh_loopback.username
    finally:
        target.connection.close()


# ---------------------------------------------------------------------- item 9: Docker TLS PEM
def test_flattened_tls_pem_is_rebuilt_into_the_files_docker_reads(tls: dict[str, str]) -> None:
    for how in ("spaces", "nothing", "escaped"):
        extra = {"tls_ca_cert": _flattened(tls["ca"])[how], "tls_client_cert": _flattened(tls["cert"])[how],
                 "tls_client_private_key": _flattened(tls["key"])[how]}
        written = docker_target_settings("d", "tcp://127.0.0.1:2376", None, None, extra)["tls"]
        for name, key in (("ca_cert", "ca"), ("client_cert", "cert"), ("client_key", "key")):
            assert Path(written[name]).read_text() == tls[key], f"{name} with line breaks as {how}"
    bundle = tls["ca"] + tls["cert"]  # a CA file may hold several certificates
    written = docker_target_settings("d", "tcp://127.0.0.1:2376", None, None,
                                     {"tls_ca_cert": _flattened(bundle)["spaces"]})["tls"]
    assert Path(written["ca_cert"]).read_text() == bundle


def test_each_bad_tls_pem_is_a_configuration_error_naming_the_problem(tls: dict[str, str], tmp_path: Path) -> None:
    key_file = tmp_path / "client.pem"
    key_file.write_text(tls["cert"])
    cases = [
        ({"tls_ca_cert": tls["key"]}, "tls_ca_cert", "holds a private key (BEGIN PRIVATE KEY), not a certificate"),
        ({"tls_ca_cert": tls["ca"][:-60]}, "tls_ca_cert", "the END line of the CERTIFICATE is missing"),
        ({"tls_ca_cert": tls["ca"].replace("\n", " ").replace("-----BEGIN CERTIFICATE-----", "")}, "tls_ca_cert",
         "the BEGIN line is missing (only an END line is there)"),
        ({"tls_client_cert": tls["cert"], "tls_client_private_key": tls["cert"]}, "tls_client_private_key",
         "holds a certificate (BEGIN CERTIFICATE), not a private key"),
        ({"tls_client_cert": tls["cert"], "tls_client_private_key": str(key_file)}, "tls_client_private_key",
         "holds a certificate (BEGIN CERTIFICATE), not a private key"),
        ({"tls_client_cert": tls["cert"], "tls_client_private_key": tls["key_encrypted"]}, "tls_client_private_key",
         "is encrypted; the Docker client cannot use a key with a passphrase"),
        ({"tls_client_cert": tls["cert"], "tls_client_private_key": tls["other_key"]}, "tls_client_private_key",
         "is not the key of tls_client_cert"),
        ({"tls_client_cert": tls["cert"], "tls_client_private_key": tls["key"].replace("\nM", "\n*", 1)},
         "tls_client_private_key", "the key body is not valid base64: it contains '*'"),
    ]
    for extra, field, problem in cases:
        with pytest.raises(ConfigurationError) as raised:
            docker_target_settings("d", "tcp://127.0.0.1:2376", None, None, extra)
        assert raised.value.field == f"connection 'd' extra.{field}", raised.value
        assert problem in raised.value.problem, raised.value
        assert tls["key"].splitlines()[1] not in str(raised.value)
