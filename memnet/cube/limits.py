"""Size limits of MIP v1. A parser checks these before it allocates or hashes anything."""

MIP_VERSION = 1
KINDS = ("plaintext", "activation", "parameter")

MAX_MANIFEST = 4 * 1024 * 1024           # bytes of one encoded signed manifest
DEFAULT_CHUNK_SIZE = 256 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
MAX_CHUNKS = 65536                        # 16 GiB at the default chunk size
MAX_NAME = 128
MAX_DESCRIPTION = 4096
MAX_LICENSE = 64
MAX_TAGS = 32
MAX_TAG = 64
MAX_PARENTS = 64
MAX_PREFIX_KEYS = 65536
MAX_TARGET_MODULES = 64
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024
MAX_TENSORS = 4096
MAX_PLAINTEXT_ITEMS = 100_000
MAX_ITEM_TEXT = 1024 * 1024
MAX_PLAINTEXT_PAYLOAD = 256 * 1024 * 1024
MAX_EMBEDDING_DIM = 4096                  # float16 values in one plaintext item's vec
MAX_RECIPIENTS = 64                       # recipients of one sealed cube
