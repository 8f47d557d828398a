"""The listener's TLS context from the [tls] section: certificate, key, optional client CA.

Owns only building an ssl.SSLContext; asyncio wraps the same LWP bytes in it.
"""
from __future__ import annotations

import ssl

from lance_store.settings import ConfigError

from .options import TlsFiles


def server_context(files: TlsFiles) -> ssl.SSLContext | None:
    """None when TLS is off; with `client_ca`, clients must present a certificate it signed."""
    if not files.enabled:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls.cert {files.cert} / tls.key {files.key}: {exc}") from None
    if files.client_ca:
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls.client_ca {files.client_ca}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context
