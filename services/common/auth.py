"""API keys: who may call the RAG API, and as which role.

A key is `tsk_<id>_<secret>`: the id names the key in listings and logs (it is not a
secret), the secret is 32 random bytes. Only the SHA-256 of the secret is stored, in
TUNESTACK_HOME/keys.json (mode 0600): a leaked file does not give working keys, and a
high-entropy random secret needs no slow password hash (GitHub and Stripe store API
tokens the same way). Keys are created, listed and revoked with `tunestack keys`; the API
re-reads the file when it changes, so a revoked key stops working without a restart.

Two roles: `user` may ask (chat, retrieve, embeddings, listings); `admin` may also change
things (ingest/delete, reindex, jobs, deploy, LLM switch, dataset upload). TUNESTACK_API_KEY,
when set, is one more admin key (what the CLI and the compose stack send).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from services.common import atomic
from services.common.errors import BadInput, NotFound
from services.common.locks import file_lock
from services.common.records import now

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")
PREFIX = "tsk_"
_TOKEN = re.compile(r"^tsk_([a-z0-9]{8})_([A-Za-z0-9_-]{20,})$")
MIN_ENV_KEY = 16  # characters: shorter (or blank) keys are refused at start


@dataclass(frozen=True)
class Identity:
    """Who a request is: a stored key, the environment's key, or nobody (no keys at all,
    loopback only: everyone is an admin, as on a laptop)."""

    id: str
    name: str
    role: Role
    via: Literal["key", "env", "open"]

    def can(self, role: Role) -> bool:
        return role == "user" or self.role == "admin"


OPEN = Identity(id="open", name="anyone (no keys configured)", role="admin", via="open")


@dataclass
class KeyRecord:
    id: str
    name: str
    role: Role
    sha256: str
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


def key_id_of(token: str) -> str | None:
    """The id part of a `tsk_<id>_<secret>` token (not secret: `keys list` shows it)."""
    m = _TOKEN.match(token)
    return m.group(1) if m else None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_env_key(key: str | None) -> None:
    """An explicitly set but empty or short TUNESTACK_API_KEY is an error, never 'open'."""
    if key is not None and len(key.strip()) < MIN_ENV_KEY:
        raise BadInput(
            f"TUNESTACK_API_KEY is set but {'empty' if not key.strip() else 'too short'} "
            f"(at least {MIN_ENV_KEY} characters).",
            hint="Unset it, or create keys with `tunestack keys create NAME --role admin`.",
        )


class KeyStore:
    """The keys file, read again whenever it changes on disk (another process, the CLI,
    may create or revoke keys while the API runs)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "keys.json"
        self._lock_path = home / "run" / "locks" / "keys.lock"
        self._cache: tuple[float, int, dict[str, KeyRecord]] | None = None
        self._mutex = threading.Lock()

    # ---- reading -----------------------------------------------------------------------------

    def _load(self) -> dict[str, KeyRecord]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        with self._mutex:
            if self._cache and self._cache[:2] == (st.st_mtime, st.st_size):
                return self._cache[2]
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                keys = {k["id"]: KeyRecord(**k) for k in raw.get("keys", [])}
            except (OSError, ValueError, TypeError, KeyError) as e:
                raise BadInput(
                    f"The keys file {self.path.name} in TUNESTACK_HOME is unreadable ({e}).",
                    hint="Restore it from a backup, or move it away and create keys again.",
                ) from e
            self._cache = (st.st_mtime, st.st_size, keys)
            return keys

    def list(self) -> list[KeyRecord]:
        return sorted(self._load().values(), key=lambda k: k.created)

    def any_active(self) -> bool:
        return any(k.active for k in self._load().values())

    def verify(self, token: str) -> Identity | None:
        m = _TOKEN.match(token)
        if not m:
            return None
        rec = self._load().get(m.group(1))
        if rec is None or not rec.active:
            return None
        if not secrets.compare_digest(rec.sha256, _digest(m.group(2))):
            return None
        return Identity(id=rec.id, name=rec.name, role=rec.role, via="key")

    # ---- writing (the CLI) -------------------------------------------------------------------

    def _save(self, keys: dict[str, KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2)
        atomic.write_text(self.path, body)
        os.chmod(self.path, 0o600)

    def create(self, name: str, role: Role) -> tuple[KeyRecord, str]:
        """A new key; the token is returned once and never stored."""
        if role not in ROLES:
            raise BadInput(f"Unknown role '{role}'.", hint=f"Use one of: {', '.join(ROLES)}.")
        if not name.strip():
            raise BadInput("A key needs a name (who or what uses it).")
        with file_lock(self._lock_path, timeout=10, what="The keys file"):
            keys = dict(self._load())
            key_id = secrets.token_hex(4)
            while key_id in keys:
                key_id = secrets.token_hex(4)
            secret = secrets.token_urlsafe(32)
            rec = KeyRecord(key_id, name.strip(), role, _digest(secret), now())
            keys[key_id] = rec
            self._save(keys)
        return rec, f"{PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> KeyRecord:
        with file_lock(self._lock_path, timeout=10, what="The keys file"):
            keys = dict(self._load())
            rec = keys.get(key_id)
            if rec is None:
                raise NotFound(f"No key '{key_id}'.", hint="`tunestack keys list` shows the ids.")
            if rec.active:
                rec = KeyRecord(**{**asdict(rec), "revoked": now()})
                keys[key_id] = rec
                self._save(keys)
        return rec


class Authenticator:
    """Token -> Identity, over the stored keys and the environment's admin key."""

    def __init__(self, store: KeyStore, env_key: str | None) -> None:
        check_env_key(env_key)
        self.store = store
        self.env_key = env_key

    @property
    def required(self) -> bool:
        """Keys exist: every request must carry one. With none, the API is open and must
        stay on loopback (services.rag_api.exposure enforces that at start)."""
        return self.env_key is not None or self.store.any_active()

    def identify(self, token: str | None) -> Identity | None:
        if not self.required:
            return OPEN
        if not token:
            return None
        if token.startswith(PREFIX):
            found = self.store.verify(token)
            if found is not None:
                return found
        if self.env_key is not None and secrets.compare_digest(
            token.encode(), self.env_key.encode()
        ):
            return Identity(id="env", name="TUNESTACK_API_KEY", role="admin", via="env")
        return None
