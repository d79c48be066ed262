//! Thumbnails of uploaded images, decoded under hard limits.
//!
//! Owns the decode limits: an image whose header declares more than [`MAX_DIMENSION`] pixels
//! on a side, or whose decoded pixels would need more than [`MAX_DECODE_ALLOC`] bytes, is
//! refused *before* the decoder allocates its output buffer. That is what defeats a
//! decompression bomb: a PNG of a few kilobytes can declare 100000 x 100000 pixels (10 GB of
//! zeros once inflated), and a decoder without limits allocates the whole buffer from the header
//! alone. Must never decode a type other than the four safe image types (PNG, JPEG, GIF, WebP;
//! only those codecs are compiled in) and never run on the async runtime (decoding is CPU
//! work: callers use `spawn_blocking`).

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use super::InspectError;

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_MAX_SIDE: u32 = 320;
/// Largest width or height of an image that gets a thumbnail. 16384 covers every camera and
/// screenshot (an 8K screen is 7680 wide); beyond it, an image is almost surely hostile.
pub const MAX_DIMENSION: u32 = 16_384;
/// Most bytes the decoder may allocate for one image (its decoded pixels included): 128 MiB,
/// e.g. a 32-megapixel RGBA picture or a 44-megapixel RGB photo. The files route runs few
/// decodes at once, so this bounds the node's memory for thumbnails.
pub const MAX_DECODE_ALLOC: u64 = 128 * 1024 * 1024;
/// JPEG quality of photo thumbnails (small, good enough at 320 px).
const JPEG_QUALITY: u8 = 82;

/// A thumbnail and what was learnt about the original image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The encoded thumbnail (PNG or JPEG), longest side at most [`THUMBNAIL_MAX_SIDE`].
    pub bytes: Vec<u8>,
    /// `image/png` or `image/jpeg`.
    pub mime: &'static str,
    /// Width of the ORIGINAL image, as displayed (after its EXIF orientation).
    pub width: u32,
    /// Height of the ORIGINAL image, as displayed.
    pub height: u32,
}

/// The decoder for a sniffed type, or `None` for a type that gets no thumbnail.
fn format_for(mime: &str) -> Option<ImageFormat> {
    match mime.split(';').next().unwrap_or("").trim() {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// The limits every decode runs under.
pub fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    limits
}

fn decode_error(e: ImageError) -> InspectError {
    match e {
        ImageError::Limits(l) => InspectError::ImageTooLarge(l.to_string()),
        other => InspectError::ImageDecode(other.to_string()),
    }
}

/// Makes a thumbnail of the image at `path`, whose type was sniffed as `mime`.
///
/// `Ok(None)` for a type that is not one of the four safe image types. An image over the
/// decode limits is [`InspectError::ImageTooLarge`], refused without allocating its pixels; a
/// corrupt one is [`InspectError::ImageDecode`]. An image already within
/// [`THUMBNAIL_MAX_SIDE`] is re-encoded at its own size (never served as uploaded: the
/// thumbnail is always our own encoding of decoded pixels). GIF and WebP animations give their
/// first frame.
pub fn make_thumbnail(path: &Path, mime: &str) -> Result<Option<Thumbnail>, InspectError> {
    let Some(format) = format_for(mime) else {
        return Ok(None);
    };
    let file = File::open(path).map_err(|source| InspectError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = ImageReader::with_format(BufReader::new(file), format);
    let mut limits = decode_limits();
    reader.limits(limits.clone());
    // The decoder reads only the header here (and checks the dimension limits).
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (w, h) = decoder.dimensions();
    // Checked here as well as by each codec's `set_limits`, so a codec that ignores a limit
    // still cannot be handed a bomb.
    limits.check_dimensions(w, h).map_err(decode_error)?;
    // The output buffer is the big allocation: refused before it is made.
    limits
        .reserve(decoder.total_bytes())
        .map_err(decode_error)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    let (width, height) = (img.width(), img.height());

    let small = if width > THUMBNAIL_MAX_SIDE || height > THUMBNAIL_MAX_SIDE {
        img.thumbnail(THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE)
    } else {
        img
    };
    let (bytes, mime) = if format == ImageFormat::Jpeg && !small.color().has_alpha() {
        (encode_jpeg(&small)?, "image/jpeg")
    } else {
        (encode_png(&small)?, "image/png")
    };
    Ok(Some(Thumbnail {
        bytes,
        mime,
        width,
        height,
    }))
}

/// Photos stay JPEG (much smaller than PNG at the same look).
fn encode_jpeg(img: &DynamicImage) -> Result<Vec<u8>, InspectError> {
    let mut out = Vec::new();
    let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
    rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))
        .map_err(|e| InspectError::ThumbnailEncode(e.to_string()))?;
    Ok(out)
}

/// Screenshots, drawings and anything with transparency: PNG (8 bits per channel).
fn encode_png(img: &DynamicImage) -> Result<Vec<u8>, InspectError> {
    let eight_bit = if img.color().has_alpha() {
        DynamicImage::ImageRgba8(img.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(img.to_rgb8())
    };
    let mut out = Cursor::new(Vec::new());
    eight_bit
        .write_with_encoder(PngEncoder::new(&mut out))
        .map_err(|e| InspectError::ThumbnailEncode(e.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A PNG chunk: length, type, data, CRC-32 of type and data.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + data.len());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
        out
    }

    /// A decompression bomb as an attacker sends it: a valid PNG header declaring
    /// `width` x `height` 8-bit RGBA pixels, then an IDAT whose zlib stream inflates to
    /// zeros (the first rows; a decoder without limits allocates the whole image from the
    /// header before it reads them). A few kilobytes on the wire.
    fn png_bomb(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8 bits, RGBA, deflate, no filter, no interlace
        png.extend(chunk(b"IHDR", &ihdr));
        // zlib: header, then stored blocks of zeros (filter byte 0 + zero pixels).
        let mut z = vec![0x78, 0x01];
        for _ in 0..4 {
            let len: u16 = 1024;
            z.push(0); // not final, stored
            z.extend_from_slice(&len.to_le_bytes());
            z.extend_from_slice(&(!len).to_le_bytes());
            z.extend(std::iter::repeat_n(0u8, usize::from(len)));
        }
        png.extend(chunk(b"IDAT", &z));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    /// Peak resident memory of this process (Linux), in bytes.
    #[cfg(target_os = "linux")]
    fn peak_rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM in /proc/self/status");
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    #[test]
    fn a_photo_gets_a_jpeg_thumbnail_within_320_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(1200, 800, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        }));
        let path = write(dir.path(), "photo.jpg", &encode(&img, ImageFormat::Jpeg));
        let t = make_thumbnail(&path, "image/jpeg").unwrap().unwrap();
        assert_eq!((t.width, t.height), (1200, 800), "the original's size");
        assert_eq!(t.mime, "image/jpeg");
        let decoded = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 213));
    }

    #[test]
    fn a_screenshot_with_alpha_gets_a_png_thumbnail() {
        let dir = tempfile::tempdir().unwrap();
        let img = DynamicImage::ImageRgba8(ImageBuffer::from_fn(500, 1000, |x, _| {
            Rgba([10, 20, 30, (x % 256) as u8])
        }));
        for (name, format, mime) in [
            ("shot.png", ImageFormat::Png, "image/png"),
            ("shot.gif", ImageFormat::Gif, "image/gif"),
        ] {
            let path = write(dir.path(), name, &encode(&img, format));
            let t = make_thumbnail(&path, mime).unwrap().unwrap();
            assert_eq!((t.width, t.height), (500, 1000), "{name}");
            assert_eq!(t.mime, "image/png", "{name}");
            assert!(t.bytes.starts_with(b"\x89PNG"), "{name}");
            let decoded = image::load_from_memory(&t.bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (160, 320), "{name}");
        }
    }

    #[test]
    fn a_small_image_is_reencoded_at_its_own_size() {
        let dir = tempfile::tempdir().unwrap();
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_pixel(40, 30, Rgb([1, 2, 3])));
        let path = write(dir.path(), "tiny.png", &encode(&img, ImageFormat::Png));
        let t = make_thumbnail(&path, "image/png").unwrap().unwrap();
        let decoded = image::load_from_memory(&t.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (40, 30));
    }

    #[test]
    fn other_types_get_no_thumbnail() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "doc.pdf", b"%PDF-1.4\n");
        assert!(make_thumbnail(&path, "application/pdf").unwrap().is_none());
        // SVG is an image but scriptable XML: never decoded, never thumbnailed.
        assert!(make_thumbnail(&path, "image/svg+xml").unwrap().is_none());
    }

    #[test]
    fn a_corrupt_image_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        // An HTML file whose name said .png: the sniffed type would not be image/png, but
        // even if a caller passed it, the decoder refuses it.
        let path = write(
            dir.path(),
            "x.png",
            b"<html><script>alert(1)</script></html>",
        );
        match make_thumbnail(&path, "image/png") {
            Err(InspectError::ImageDecode(_)) => {}
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        match make_thumbnail(&dir.path().join("absent.png"), "image/png") {
            Err(InspectError::Io { .. }) => {}
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    /// The bomb of the issue: 100000 x 100000 pixels (40 GB as RGBA) in a few KB. Refused by
    /// the dimension limit from its header, and the process's peak memory stays far below
    /// what decoding it would need.
    #[test]
    fn a_decompression_bomb_is_refused_with_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        let bomb = png_bomb(100_000, 100_000);
        assert!(bomb.len() < 8 * 1024, "the bomb is {} bytes", bomb.len());
        let path = write(dir.path(), "bomb.png", &bomb);
        let started = std::time::Instant::now();
        match make_thumbnail(&path, "image/png") {
            Err(InspectError::ImageTooLarge(why)) => {
                assert!(!why.is_empty());
            }
            other => panic!("expected the decode limits to refuse the bomb, got {other:?}"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "refused only after {:?}",
            started.elapsed()
        );
        #[cfg(target_os = "linux")]
        {
            let peak = peak_rss();
            assert!(
                peak < 2 * MAX_DECODE_ALLOC + 256 * 1024 * 1024,
                "peak RSS {peak} bytes: the bomb was (partly) decoded"
            );
        }
    }

    /// Within the dimension limit but over the allocation limit: 12000 x 12000 RGBA would need
    /// 576 MB. Refused by `max_alloc` before the buffer exists.
    #[test]
    fn an_image_over_the_allocation_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "big.png", &png_bomb(12_000, 12_000));
        match make_thumbnail(&path, "image/png") {
            Err(InspectError::ImageTooLarge(_)) => {}
            other => panic!("expected the allocation limit to refuse it, got {other:?}"),
        }
        #[cfg(target_os = "linux")]
        assert!(peak_rss() < 2 * MAX_DECODE_ALLOC + 256 * 1024 * 1024);
    }

    /// The same bomb header as a legitimate small image passes: the limits refuse by size,
    /// not by the way the file was made.
    #[test]
    fn the_bomb_builder_makes_valid_pngs() {
        let dir = tempfile::tempdir().unwrap();
        // 8 x 8 RGBA: 8 rows of 1 + 32 bytes = 264 bytes of zeros, within the 4 KiB written.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&8u32.to_be_bytes());
        ihdr.extend_from_slice(&8u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        png.extend(chunk(b"IHDR", &ihdr));
        let raw = vec![0u8; 8 * 33];
        let mut z = vec![0x78, 0x01, 1];
        let len = raw.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(&raw);
        // Adler-32 of zeros: a = 1, b = n.
        let adler: u32 = (u32::from(len) << 16) | 1;
        z.extend_from_slice(&adler.to_be_bytes());
        png.extend(chunk(b"IDAT", &z));
        png.extend(chunk(b"IEND", &[]));
        let path = write(dir.path(), "ok.png", &png);
        let t = make_thumbnail(&path, "image/png").unwrap().unwrap();
        assert_eq!((t.width, t.height), (8, 8));
    }
}
