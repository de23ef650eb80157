"""A throw-away signing key made per test session with the real gpg."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SigningKey:
    home: Path
    fingerprint: str
    public: Path  # armored public key: pass to --keyring

    def sign(self, path: Path, sig: Path | None = None) -> Path:
        """Detached binary signature `path.sig`, as distributions publish them."""
        out = sig or path.with_name(path.name + ".sig")
        out.unlink(missing_ok=True)
        subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--yes",
                "--detach-sign",
                "--local-user",
                self.fingerprint,
                "--output",
                str(out),
                str(path),
            ],
            check=True,
            capture_output=True,
        )
        return out

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.home, ignore_errors=True)


def make_key(workdir: Path, name: str = "nestos test key") -> SigningKey:
    home = workdir / f"gnupg-{name.replace(' ', '-')}"
    home.mkdir(mode=0o700, parents=True)
    os.chmod(home, 0o700)
    subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <test@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-keys"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    public = workdir / f"{name.replace(' ', '-')}.pub.asc"
    public.write_bytes(
        subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--armor", "--export", fpr],
            check=True,
            capture_output=True,
        ).stdout
    )
    return SigningKey(home, fpr, public)
