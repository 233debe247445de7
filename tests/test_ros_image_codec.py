"""sensor_msgs/Image and CompressedImage decoding (priorocc_ros.image_codec)."""
import cv2
import numpy as np
import pytest

from priorocc_ros.image_codec import (ImageDecodeError, decode_any, decode_compressed, decode_image, encode_compressed,
                                      encode_image, reduced_K)
from priorocc_ros.msgs import header, new_msg

H, W = 6, 8
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def raw(encoding, data, w=W, h=H, step=None, big=False):
    a = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    return new_msg("sensor_msgs/msg/Image", header=header(1, "cam"), height=h, width=w, encoding=encoding,
                   is_bigendian=int(big), step=step if step is not None else a.size // h, data=a)


def test_rgb8_bgr8_rgba_mono8():
    assert np.array_equal(decode_image(raw("rgb8", RGB)), RGB)
    assert np.array_equal(decode_image(raw("bgr8", RGB[:, :, ::-1].copy())), RGB)
    rgba = np.concatenate([RGB, np.full((H, W, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_image(raw("rgba8", rgba)), RGB)
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((H, W, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_image(raw("bgra8", bgra)), RGB)
    g = RGB[:, :, 0].copy()
    assert np.array_equal(decode_image(raw("mono8", g)), np.repeat(g[:, :, None], 3, 2))


def test_16bit_little_and_big_endian():
    v16 = RGB.astype(np.uint16) * 257  # 8-bit value v -> v * 257, >> 8 gives v back
    assert np.array_equal(decode_image(raw("rgb16", v16.astype("<u2"))), RGB)
    assert np.array_equal(decode_image(raw("rgb16", v16.astype(">u2"), big=True)), RGB)
    m = v16[:, :, 1].astype("<u2")
    assert np.array_equal(decode_image(raw("mono16", m))[:, :, 0], RGB[:, :, 1])


def test_row_padding_respected():
    padded = np.zeros((H, W * 3 + 5), np.uint8)
    padded[:, : W * 3] = RGB.reshape(H, -1)
    assert np.array_equal(decode_image(raw("rgb8", padded, step=W * 3 + 5)), RGB)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns_recover_a_flat_colour(pattern):
    colour = {"r": 200, "g": 100, "b": 30}
    mosaic = np.zeros((8, 8), np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = colour[pattern[2 * dy + dx]]
    out = decode_image(raw(f"bayer_{pattern}8", mosaic, w=8, h=8))
    assert np.abs(out[2:-2, 2:-2].astype(int) - [200, 100, 30]).max() <= 1


def test_bad_raw_images_raise_clear_errors():
    with pytest.raises(ImageDecodeError, match="unsupported Image encoding 'yuv_wrong'"):
        decode_image(raw("yuv_wrong", RGB), "CAM_FRONT")
    m = raw("rgb8", RGB)
    m.data = m.data[:-3]
    with pytest.raises(ImageDecodeError, match=r"CAM_FRONT: Image data has \d+ bytes; expected step\*height"):
        decode_image(m, "CAM_FRONT")
    with pytest.raises(ImageDecodeError, match="step"):
        decode_image(raw("rgb8", RGB, step=W * 3 - 1), "CAM_FRONT")


def test_jpeg_png_round_trip_and_errors():
    img = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    j = encode_compressed(img, header(0, "c"), "jpeg", quality=95)
    assert np.abs(decode_compressed(j).astype(int) - img).max() <= 6
    p = encode_compressed(RGB, header(0, "c"), "png")
    assert np.array_equal(decode_any(p), RGB)
    # image_transport style format string; codec from the bytes
    p.format = "rgb8; png compressed bgr8"
    assert np.array_equal(decode_any(p), RGB)
    cut = new_msg("sensor_msgs/msg/CompressedImage", header=header(0, "c"), format="jpeg", data=j.data[: len(j.data) // 2])
    with pytest.raises(ImageDecodeError, match="CAM_BACK: JPEG data is truncated"):
        decode_compressed(cut, "CAM_BACK")
    junk = new_msg("sensor_msgs/msg/CompressedImage", header=header(0, "c"), format="jpeg",
                   data=np.frombuffer(b"not an image at all", np.uint8))
    with pytest.raises(ImageDecodeError, match="neither JPEG nor PNG"):
        decode_compressed(junk, "CAM_BACK")
    corrupt = j.data.copy()
    corrupt[2:200] = 0  # header destroyed, end marker intact
    with pytest.raises(ImageDecodeError):
        decode_compressed(new_msg("sensor_msgs/msg/CompressedImage", header=header(0, "c"), format="jpeg", data=corrupt))


def test_reduced_jpeg_decode_and_K():
    img = (RNG.random((96, 160, 3)) * 255).astype(np.uint8)
    j = encode_compressed(img, header(0, "c"))
    assert decode_compressed(j, reduce=2).shape == (48, 80, 3)
    K = np.array([[100.0, 0, 80], [0, 100.0, 48], [0, 0, 1]])
    K2 = reduced_K(K, 2)
    assert K2[0, 0] == 50.0 and K2[0, 2] == pytest.approx(39.75)


def test_encode_image():
    m = encode_image(RGB, header(5, "base_link"))
    assert (m.height, m.width, m.step, m.encoding) == (H, W, W * 3, "rgb8")
    assert np.array_equal(decode_image(m), RGB)
    assert np.array_equal(decode_image(encode_image(RGB, header(5, "x"), "bgr8")), RGB)


def test_jpeg_decodes_to_flashoccs_pixels_in_rgb_order():
    """The node's JPEG decode (OpenCV, RGB written by the codec) gives, on the real keyframe's six
    cameras, exactly the pixels FlashOCC's loader gets from ``PIL.Image.open``; at 1/2 size the
    same as OpenCV's BGR decode swapped. Mutation: IMREAD_COLOR_RGB dropped (BGR returned) ->
    this fails."""
    from PIL import Image

    from tests.conftest import require_shared

    files = sorted(require_shared("nuscenes-real/samples").glob("CAM_*/*.jpg"))
    assert len(files) == 6
    for f in files:
        data = np.frombuffer(f.read_bytes(), np.uint8)
        msg = new_msg("sensor_msgs/msg/CompressedImage", header=header(0, "c"), format="jpeg", data=data)
        assert np.array_equal(decode_compressed(msg), np.asarray(Image.open(f).convert("RGB"))), f.name
    half = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_2), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decode_compressed(msg, reduce=2), half)
