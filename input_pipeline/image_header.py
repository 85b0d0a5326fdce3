"""The size an encoded image declares, read from its header before anything is decoded.

A decoder allocates what the header declares: a 1.2 MB PNG that declares 20,000 x 20,000 pixels
decodes to 1.2 GB. The first pass (first_pass.py) reads the declared size first, so an image over
the limit is skipped without being decoded, and the memory each decode will take is known before
it starts (first_pass bounds the bytes of the decodes in flight by it).

`declared_size` gives [height, width, pixels, decode bytes] for every format `tf.io.decode_image`
reads. JPEG's size comes from TensorFlow's own `tf.image.extract_jpeg_shape`; the other formats'
come from `read_header`, in Python.
"""
import struct

import numpy as np
import tensorflow as tf

# Pillow's Image.MAX_IMAGE_PIXELS (int(1024 * 1024 * 1024 // 4 // 3)), its decompression-bomb
# limit: the default of --max_image_pixels.
MAX_IMAGE_PIXELS = 89_478_485

# Peak bytes a decode takes per declared pixel, measured (resource.getrusage around
# decode_image + resize_for_cache of a 6,000 x 6,000 image, TF 2.21): baseline JPEG 3.6, progressive
# JPEG 9.6 (libjpeg holds every coefficient), PNG 3.1 (8 or 16 bits), GIF 4.1, 24-bit BMP 12 and
# 32-bit BMP 16 (the file is the pixels, and the decoder keeps four channels), WebP 4-8.
_JPEG_BYTES_PER_PIXEL = 10
_BYTES_PER_PIXEL = {"png": 4, "gif": 4, "bmp": 16, "webp": 8}
MAX_BYTES_PER_PIXEL = max(_JPEG_BYTES_PER_PIXEL, *_BYTES_PER_PIXEL.values())
# What read_header's `pixels` says when it is not a count: NOT_AN_IMAGE, no format TF decodes
# (the decoder then refuses the data with its own message); UNSIZED, a format TF decodes whose
# size cannot be read here (JPEG XL, or a header cut short), which is therefore not decoded.
NOT_AN_IMAGE, UNSIZED = 0, -1
_LARGEST = 2 ** 62
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_XL_MAGICS = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")


def declared_size(encoded: tf.Tensor) -> tf.Tensor:
    """int64 [4]: the height, width and pixels `encoded` declares, and the bytes decoding it will
    take at most, from its header alone. Raises InvalidArgumentError on a JPEG whose header
    cannot be read; for the other formats see `read_header`."""
    def jpeg() -> tf.Tensor:
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        pixels = shape[0] * shape[1]
        return tf.stack([shape[0], shape[1], pixels, pixels * _JPEG_BYTES_PER_PIXEL])

    def other() -> tf.Tensor:
        size = tf.numpy_function(read_header, [encoded], tf.int64, stateful=False)
        size.set_shape([4])
        return size
    return tf.cond(tf.strings.substr(encoded, 0, len(_JPEG_MAGIC)) == _JPEG_MAGIC, jpeg, other)


def read_header(data: bytes) -> np.ndarray:
    """int64 [height, width, pixels, decode bytes] from a PNG, GIF, BMP or WebP header.

    TensorFlow has shape readers for JPEG only (tf.image.extract_jpeg_shape), so these headers
    are read here, at the offsets its own decoders read them from. `pixels` is NOT_AN_IMAGE for
    data in no format TensorFlow decodes, UNSIZED for a format whose size cannot be read here (the
    size fields are then 0). A GIF's pixels are its screen's or, when larger, all its frames'
    together: the decoder reads every frame before it keeps the first.
    """
    if isinstance(data, np.ndarray):  # what tf.numpy_function hands over: a 0-d array
        data = data.item()
    if data.startswith(b"\x89PNG"):
        # IHDR, which libpng requires first: width and height, big-endian, after the signature.
        size = _unpack(">II", data, 16)
        return _size(size[::-1], "png") if size else _unsized()
    if data.startswith(b"GIF8"):
        return _gif(data)
    if data.startswith(b"BM"):
        # TF's BMP decoder takes width and height as little-endian int32s at 18 and 22 (a
        # negative height is a top-down image).
        size = _unpack("<ii", data, 18)
        return _size((abs(size[1]), abs(size[0])), "bmp") if size else _unsized()
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp(data)
    if data.startswith(_JPEG_XL_MAGICS):
        return _unsized()
    return np.zeros(4, np.int64)


def _unpack(layout: str, data: bytes, offset: int):
    """struct.unpack_from, or None when `data` ends first."""
    if len(data) < offset + struct.calcsize(layout):
        return None
    return struct.unpack_from(layout, data, offset)


def _size(height_width, kind: str, pixels: int = 0) -> np.ndarray:
    height, width = (int(v) for v in height_width)
    pixels = max(pixels, height * width)
    # Held below int64's range: a damaged header can declare 2^32 x 2^32, refused all the same.
    return np.array([height, width, min(pixels, _LARGEST),
                     min(pixels * _BYTES_PER_PIXEL[kind], _LARGEST)], np.int64)


def _unsized() -> np.ndarray:
    return np.array([0, 0, UNSIZED, 0], np.int64)


def _gif(data: bytes) -> np.ndarray:
    """The logical screen and every frame's declared size: giflib's DGifSlurp, which TF's decoder
    calls, allocates each frame's raster before TF keeps the first frame."""
    screen = _unpack("<HHB", data, 6)
    if screen is None:
        return _unsized()
    width, height, flags = screen
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # past the global colour table
    frames = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x21:  # an extension: label, then sub-blocks
            pos = _past_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # an image: its descriptor, a local colour table, LZW sub-blocks
            descriptor = _unpack("<HHHHB", data, pos + 1)
            if descriptor is None:
                break
            frames += descriptor[2] * descriptor[3]
            pos += 10 + (3 << ((descriptor[4] & 7) + 1) if descriptor[4] & 0x80 else 0)
            pos = _past_sub_blocks(data, pos + 1)  # + 1: the LZW minimum code size
        else:  # the trailer, or data giflib refuses anyway
            break
    return _size((height, width), "gif", frames)


def _past_sub_blocks(data: bytes, pos: int) -> int:
    """The offset after a chain of GIF sub-blocks (each a length byte and that many bytes, the
    chain ended by a zero length) starting at `pos`."""
    while pos < len(data):
        length = data[pos]
        pos += 1 + length
        if length == 0:
            break
    return pos


def _webp(data: bytes) -> np.ndarray:
    """A WebP's canvas: from the VP8 frame header (lossy), the VP8L header (lossless) or the VP8X
    chunk (extended), times the frames of an animation."""
    chunk = data[12:16]
    if chunk == b"VP8 ":
        size = _unpack("<HH", data, 26)
        return _size((size[1] & 0x3FFF, size[0] & 0x3FFF), "webp") if size else _unsized()
    if chunk == b"VP8L":
        bits = _unpack("<I", data, 21)
        if bits is None:
            return _unsized()
        return _size((((bits[0] >> 14) & 0x3FFF) + 1, (bits[0] & 0x3FFF) + 1), "webp")
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _size((height, width), "webp", height * width * max(_webp_frames(data), 1))
    return _unsized()


def _webp_frames(data: bytes) -> int:
    """The ANMF (animation frame) chunks of an extended WebP."""
    frames, pos = 0, 12
    while pos + 8 <= len(data):
        length = struct.unpack_from("<I", data, pos + 4)[0]
        frames += data[pos:pos + 4] == b"ANMF"
        pos += 8 + length + (length & 1)  # chunks are padded to an even length
    return frames
