"""Self-signed certificates made by openssl, the tool users make theirs with."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(
    directory: Path, common_name: str, *, ip: str | None = None, name: str = "ca", days: int = 2
) -> tuple[Path, Path]:
    """`directory/NAME.key` and `directory/NAME.pem`: an RSA certificate that is its own
    CA (an Ignition CA bundle), or with `ip` a TLS server certificate for that address."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days)]
    argv += ["-subj", f"/CN={common_name}", "-keyout", str(key), "-out", str(cert)]
    if ip is not None:
        argv += ["-addext", f"subjectAltName=IP:{ip}"]
    subprocess.run(argv, check=True, capture_output=True)
    return key, cert
