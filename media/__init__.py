"""Images: safe intake of untrusted bytes and content-addressed blob storage."""

from media.intake import (
    CorruptImage,
    EmptyImage,
    ImageRejected,
    ImageTooLarge,
    IntakeResult,
    NotAGrid,
    TooManyPixels,
    UnsupportedFormat,
    decode_image,
    encode_canonical,
    intake_image,
    split_grid,
)
from media.store import (
    BlobIntegrityError,
    BlobNotFound,
    ImageStore,
    LocalImageStore,
    S3ImageStore,
    key_for,
    open_store,
)

__all__ = [
    "BlobIntegrityError",
    "BlobNotFound",
    "CorruptImage",
    "EmptyImage",
    "ImageRejected",
    "ImageStore",
    "ImageTooLarge",
    "IntakeResult",
    "LocalImageStore",
    "NotAGrid",
    "S3ImageStore",
    "TooManyPixels",
    "UnsupportedFormat",
    "decode_image",
    "encode_canonical",
    "intake_image",
    "key_for",
    "open_store",
    "split_grid",
]
