"""WireGuard keys for the lab, made by ``wg`` itself (the tool a person would use)."""

from __future__ import annotations

from .command import run


def public_key(private_b64: str) -> str:
    return run(["wg", "pubkey"], input=private_b64 + "\n", timeout=10).stdout.strip()


def gen_keypair() -> tuple[str, str]:
    """A fresh key pair ``(private_b64, public_b64)``."""
    private = run(["wg", "genkey"], timeout=10).stdout.strip()
    return private, public_key(private)


def gen_psk() -> str:
    """A fresh base64 preshared key from ``wg genpsk``."""
    return run(["wg", "genpsk"], timeout=10).stdout.strip()
