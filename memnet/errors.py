"""The one exception hierarchy of memnet.

Every error a user can cause is a MemnetError whose message fits on one line; the CLI prints it
and exits non-zero. Anything else reaching the top is a bug and keeps its traceback.
"""


class MemnetError(Exception):
    """Base of every expected memnet failure."""

    exit_code = 1


class UsageError(MemnetError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class FormatError(MemnetError):
    """Bytes that do not follow MIP v1 (manifest, payload, archive, canonical encoding)."""


class CanonicalError(FormatError):
    """msgpack that is malformed or not in canonical form."""


class LimitError(FormatError):
    """A field, frame or payload larger than MIP v1 allows."""


class CIDError(FormatError):
    """A malformed CID, or bytes whose hash does not match their CID."""


class SignatureError(FormatError):
    """A manifest signature that does not verify under its author key."""


class TensorError(FormatError):
    """A tensor payload that is not a safe, consistent safetensors file."""


class ArchiveError(FormatError):
    """A CAR archive that is truncated, malformed or inconsistent."""


class SealError(FormatError):
    """A sealed (encrypted) cube whose seal or ciphertext fails to open: tampered or malformed."""


class PolicyError(MemnetError):
    """Well-formed input that memnet refuses: expired, older version, name conflict."""


class StoreError(MemnetError):
    """The local store cannot do what was asked."""


class NotFoundError(StoreError):
    """No such cube (or chunk) in the local store."""


class StoreFullError(StoreError):
    """The disk holding the store is full; nothing of the failed write was kept."""


class HomeError(MemnetError):
    """A node home (MEMNET_HOME) that is missing, incomplete or unsafe."""


class ConfigError(HomeError, UsageError):
    """A config.json setting (or a `memnet config set` value) that is unknown, of the wrong type
    or out of range; the message names the key and what is allowed. Exit code 2, a usage error."""


class NetworkError(MemnetError):
    """Talking to peers failed: unreachable, timed out, or nothing found in the swarm."""


class PeerError(NetworkError):
    """A peer broke the protocol or answered with an error; the peer, not us, is at fault."""


class PeerTimeout(PeerError):
    """A peer sent nothing within the time allowed (idle, or a frame trickling in): a stall."""


class PeerGone(PeerError):
    """The stream or connection to a peer failed under us (closed early, reset, could not be
    opened): nothing says the peer lied or stalled, and a new connection may serve."""


class FetchError(NetworkError):
    """A cube could not be fetched complete and verified from any provider."""


class FetchDeadline(FetchError):
    """A fetch did not finish by the time computing instead would have (generation falls back
    to the prefill; the daemon finishes the fetch for next time)."""


class DaemonError(MemnetError):
    """No daemon is running for this home, or the local control channel failed."""


class DaemonTimeout(DaemonError):
    """The daemon did not answer a command within the caller's timeout (it may still finish it)."""


class BusyError(MemnetError):
    """A server is at its limit (the model's request queue is full): try again shortly."""
