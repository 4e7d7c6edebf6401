"""A real software TPM (swtpm) for the TPM path's tests.

``swtpm_setup`` manufactures the TPM in a temp dir: its EKs and, unless told otherwise,
EK certificates issued by a swtpm-localca CA whose keys also live in that temp dir (its
configuration files are written there and passed with ``--config``, so nothing under /etc
or /var is used). ``swtpm socket`` then serves it on free TCP ports until the test is done.

A missing swtpm fails the test with a message saying how to install it; it never skips.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tpm2_pytss.types import TPM2B_PUBLIC  # type: ignore[import-untyped]

from tests.processes import wait_until

LOCALCA = "/usr/share/swtpm/swtpm-localca"

# TPM2_Startup is refused once the TPM is started; a well-formed answer proves it serves.
_STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")


@dataclass(frozen=True)
class SwTPM:
    tcti: str  # for DEVTRUST_TPM_TCTI
    ca_cert_pem: bytes  # the issuer and root certificates that signed the EK certificates
    state_dir: Path
    ek: Literal["rsa", "ecc"]  # which EK the test is about; swtpm makes both
    rsa_bits: int = 2048  # its RSA EK's: 2048 (low range) or 3072 (high range, SHA-384)

    @property
    def ek_template(self) -> str:
        """The TCG template of the EK the test means, as ``DeviceTPM.ek_template_name``."""
        if self.ek == "ecc":
            return "EK-HIGH-ECC384"
        return "EK-RSA2048" if self.rsa_bits == 2048 else "EK-HIGH-RSA3072"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system`", pytrace=False)
    return path


def _write_ca_config(directory: Path) -> Path:
    """swtpm_setup.conf and the swtpm-localca files it names, all inside ``directory``."""
    ca = directory / "ca"
    ca.mkdir()
    localca_conf = directory / "swtpm-localca.conf"
    localca_conf.write_text(
        f"statedir = {ca}\n"
        f"signingkey = {ca / 'signkey.pem'}\n"
        f"issuercert = {ca / 'issuercert.pem'}\n"
        f"certserial = {ca / 'certserial'}\n"
    )
    localca_options = directory / "swtpm-localca.options"
    localca_options.write_text(
        "--platform-manufacturer devtrust\n--platform-version 2.1\n--platform-model swtpm\n"
    )
    setup_conf = directory / "swtpm_setup.conf"
    setup_conf.write_text(
        f"create_certs_tool = {LOCALCA}\n"
        f"create_certs_tool_config = {localca_conf}\n"
        f"create_certs_tool_options = {localca_options}\n"
        "active_pcr_banks = sha256\n"
    )
    return setup_conf


def _bindable(port: int) -> bool:
    """Nothing listens on ``port`` and no connection lingers on it (no SO_REUSEADDR)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port_pair() -> int:
    """A free port whose successor is free too: the swtpm TCTI expects the control
    channel on port + 1 and has no option to say otherwise.

    Taken below the kernel's ephemeral range. The TCTI opens a connection per command, and
    Linux hands out even ephemeral ports to connect() and odd ones to bind(0): after a few
    thousand commands (a benchmark run) every even ephemeral port can sit in TIME_WAIT, and
    every pair of consecutive ports holds an even one."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = max(1024, low - 12000)
    for _ in range(200):
        port = first + secrets.randbelow(low - 1 - first)
        if _bindable(port) and _bindable(port + 1):
            return port
    pytest.fail(
        f"found no two consecutive free ports in {first}-{low - 1} for swtpm", pytrace=False
    )


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(_STARTUP_CLEAR)
            return sock.recv(10)[:2] == b"\x80\x01"
    except OSError:
        return False


@contextmanager
def swtpm(
    tmp_path: Path, ek: Literal["rsa", "ecc", "rsa3072"] = "rsa", with_ek_cert: bool = True
) -> Iterator[SwTPM]:
    """A manufactured swtpm serving on free ports; stopped when the block ends.

    swtpm_setup always creates both an RSA-2048 EK (certificate at NV 0x01c00002) and an
    ECC NIST P-384 EK (high range, certificate at NV 0x01c00016); ``ek`` records which
    one the test means and adds ``--ecc`` (an ECC storage primary key) for "ecc". With
    "rsa3072" the RSA EK is the high-range RSA-3072 one instead (certificate at NV
    0x01c0001c, SHA-384 names, AES-256), and the test means it.
    """
    setup = _binary("swtpm_setup")
    server = _binary("swtpm")
    if not Path(LOCALCA).exists():
        pytest.fail(f"{LOCALCA} is missing: run `make system`", pytrace=False)
    root = tmp_path / "swtpm"
    state = root / "state"
    state.mkdir(parents=True)
    config = _write_ca_config(root)
    # --create-platform-cert implies --create-ek-cert, so it goes too without certificates.
    certs = ["--create-ek-cert", "--create-platform-cert"] if with_ek_cert else ["--createek"]
    argv = [setup, "--tpm2", "--tpmstate", str(state), *certs, "--lock-nvram",
            "--config", str(config), "--logfile", str(root / "setup.log")]  # fmt: skip
    if ek == "ecc":
        argv.append("--ecc")
    rsa_bits = 3072 if ek == "rsa3072" else 2048
    if rsa_bits != 2048:
        argv += ["--rsa-keysize", str(rsa_bits)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        log = (root / "setup.log").read_text() if (root / "setup.log").exists() else ""
        pytest.fail(f"swtpm_setup failed:\n{result.stdout}{result.stderr}{log}", pytrace=False)

    ca_cert_pem = b""
    if with_ek_cert:
        ca = root / "ca"
        ca_cert_pem = (ca / "issuercert.pem").read_bytes() + (
            ca / "swtpm-localca-rootca-cert.pem"
        ).read_bytes()

    port = _free_port_pair()
    ctrl = port + 1
    process = subprocess.Popen(
        [server, "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
         "--flags", "not-need-init,startup-clear", "--log", f"file={root / 'swtpm.log'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: process.poll() is not None or _answers(port), 10, "swtpm did not start")
        if process.poll() is not None:
            pytest.fail(f"swtpm exited with {process.returncode}", pytrace=False)
        yield SwTPM(
            tcti=f"swtpm:host=127.0.0.1,port={port}",
            ca_cert_pem=ca_cert_pem,
            state_dir=state,
            ek="ecc" if ek == "ecc" else "rsa",
            rsa_bits=rsa_bits,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)


# -- structures the tests tamper with ---------------------------------------------------


def self_signed_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed P-256 CA certificate valid for a day either side of now, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def another_ca_pem() -> bytes:
    """A self-signed CA that signed no EK certificate: configured, it refuses every EK."""
    _, cert = self_signed_ca("Some other EK CA")
    return cert.public_bytes(serialization.Encoding.PEM)


def with_attributes(public: bytes, clear: int = 0, add: int = 0) -> bytes:
    """A marshalled TPM2B_PUBLIC with object attributes cleared and added."""
    area, _ = TPM2B_PUBLIC.unmarshal(public)
    area.publicArea.objectAttributes = (area.publicArea.objectAttributes & ~clear) | add
    return bytes(area.marshal())


# -- a swtpm for people: `python -m tests.tpm DIR` ---------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Manufacture a swtpm in DIR as the tests do, print its TCTI and the EK CA's file, and
    serve it until interrupted (SIGINT or SIGTERM): for the demo, and for trying the agent
    by hand (``DEVTRUST_TPM_TCTI=$(...)``)."""
    import argparse
    import signal
    import sys
    import threading

    parser = argparse.ArgumentParser(
        prog="python -m tests.tpm",
        description="Serve a manufactured swtpm (EK certificates by a local CA) until stopped.",
    )
    parser.add_argument("directory", type=Path, help="where its state and CA go (kept)")
    parser.add_argument(
        "--ek",
        choices=("rsa", "ecc", "rsa3072"),
        default="rsa",
        help="rsa3072: its RSA EK is the high range's RSA-3072 one instead of RSA-2048",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        args.directory.mkdir(parents=True, exist_ok=True)
        with swtpm(args.directory, ek=args.ek) as running:
            ca_file = args.directory / "ek-ca.pem"
            ca_file.write_bytes(running.ca_cert_pem)
            print(f"tcti {running.tcti}\nek-ca {ca_file}", flush=True)
            stop.wait()
    except (pytest.fail.Exception, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
