"""A stack's PKI, made with the openssl CLI: one CA, serving and client certificates.

Everything is EC P-256 (fast to generate) and valid for ten years; a stack
keeps its PKI across restarts, so kubeconfigs handed out stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devtools.stack.util import require_tool, run_logged

#: Client identities. system:masters is the admin group; the controller
#: manager and the scheduler get their own users, bound by RBAC's bootstrap
#: policy like in a kubeadm cluster.
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("jobreaper-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
}

SERVING_SANS = (
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_crt(self, who: str) -> Path:
        return self.dir / f"{who}.crt"

    def client_key(self, who: str) -> Path:
        return self.dir / f"{who}.key"

    def files(self) -> list[Path]:
        out = [self.ca_crt, self.ca_key, self.serving_crt, self.serving_key, self.sa_key]
        out.append(self.sa_pub)
        for who in CLIENTS:
            out += [self.client_crt(who), self.client_key(who)]
        return out

    @property
    def complete(self) -> bool:
        return all(p.is_file() for p in self.files())


def ensure_pki(directory: Path, log: Path) -> Pki:
    """The stack's PKI in ``directory``, made now unless complete already."""
    pki = Pki(directory)
    if pki.complete:
        return pki
    require_tool("openssl", "openssl makes the stack's certificates (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    step = "make certificates (openssl)"

    def openssl(*args: str) -> None:
        run_logged(["openssl", *args], step=step, log=log, cwd=directory, timeout=60)

    def ec_key(path: Path) -> None:
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path))

    ec_key(pki.ca_key)
    openssl(
        "req", "-x509", "-new", "-key", str(pki.ca_key), "-sha256", "-days", "3650",
        "-subj", "/CN=jobreaper-stack-ca", "-out", str(pki.ca_crt),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip

    def sign(name: str, subject: str, ext: str) -> None:
        key, csr, crt = (
            directory / f"{name}.key",
            directory / f"{name}.csr",
            directory / f"{name}.crt",
        )
        ext_file = directory / f"{name}.ext"
        ec_key(key)
        ext_file.write_text(ext)
        openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki.ca_crt), "-CAkey", str(pki.ca_key),
            "-CAcreateserial", "-sha256", "-days", "3650", "-extfile", str(ext_file),
            "-out", str(crt),
        )  # fmt: skip
        csr.unlink()
        ext_file.unlink()

    sign(
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=" + ",".join(SERVING_SANS) + "\n",
    )
    for who, (cn, org) in CLIENTS.items():
        subject = f"/CN={cn}" + (f"/O={org}" if org else "")
        sign(
            who,
            subject,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )
    ec_key(pki.sa_key)
    openssl("ec", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    for path in directory.iterdir():
        if path.suffix == ".key":
            path.chmod(0o600)
    return pki
