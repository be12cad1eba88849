"""The one writer of the bucket (beside the catalog, its one reader).

Everything that puts a generation's objects into the bucket goes through here, in the order
that makes an interrupted write visible to readers (docs/format.md):

- a generation **with a snapshot**: the snapshot, ``.changecounter``, ``.dep`` (metadata
  ``base: snapshot``), the WAL frames captured with it, then ``.meta`` **last**;
- a generation **without one** (the daemon's, after its own checkpoint): ``.changecounter``,
  ``.dep`` (metadata: the parent's last frame and chain value it builds on), ``.meta``, then
  its batches;
- a snapshot added later to a snapshot-less generation (``snapshot``, the daemon's policy).

And the rule that keeps an encrypted backup encrypted: without a recipient, no plaintext
snapshot or WAL batch goes into, or right after, a generation whose objects are age files.
"""

from __future__ import annotations

import threading
import uuid

from .catalog import Generation
from .errors import ConfigError, NotFoundError
from .store.base import ObjectStore

VERDICTS_KEPT = 4096  # generations whose "holds age objects" verdict a writer remembers
NEED_RECIPIENT = ("give --age-recipient (or LIBSQL_BOTTOMLESS_AGE_RECIPIENT, config key "
                  "age_recipient) with the public key it is encrypted to")


class SealedGenerations:
    """Which generations hold age objects: read once each (the first bytes of a snapshot and
    of the newest batch), then remembered, also for the ones this process wrote plaintext
    into."""

    def __init__(self) -> None:
        self._sealed: dict[uuid.UUID, bool] = {}
        self._guard = threading.Lock()

    def wrote_plain(self, g: uuid.UUID) -> None:
        self._remember(g, False, keep=True)

    def _remember(self, g: uuid.UUID, sealed: bool, keep: bool = False) -> None:
        with self._guard:
            if keep and g in self._sealed:
                return
            self._sealed[g] = sealed
            while len(self._sealed) > VERDICTS_KEPT:
                del self._sealed[next(iter(self._sealed))]

    def sealed(self, store: ObjectStore, g: Generation) -> bool:
        known = self._sealed.get(g.id)
        if known is not None:
            return known
        sample = [g.snapshot.key] if g.snapshot is not None else []
        if g.batches:
            sample.append(g.batches[-1][1].key)
        verdict = any(_is_age(store, k) for k in sample)
        self._remember(g.id, verdict)
        return verdict

    def refuse_plaintext_into(self, store: ObjectStore, g: Generation,
                              what: str = "WAL batches", after: bool = False) -> None:
        """Without recipients: ConfigError if ``g`` holds age objects and ``what`` would be
        added to it (or, with ``after``, follow it) in plaintext through ``store``."""
        if store.encrypts or not self.sealed(store, g):
            return
        how = "follow it" if after else "be added to it"
        raise ConfigError(f"generation {g.id} is encrypted (age) and {what} would {how} in "
                          f"plaintext; {NEED_RECIPIENT}")


def _is_age(store: ObjectStore, key: str) -> bool:
    try:
        return store.object_encryption(key) == "age"
    except NotFoundError:  # removed since the listing
        return False


def refuse_plaintext_from_sealed(store: ObjectStore, key: str) -> None:
    """What is about to be uploaded to ``key`` was rebuilt from what ``store`` read: if that
    was decrypted and this store does not encrypt, it would go up in the clear."""
    if store.decrypted_any and not store.encrypts:
        raise ConfigError(f"{key}: what it would hold was read from encrypted (age) objects; "
                          f"{NEED_RECIPIENT}")
