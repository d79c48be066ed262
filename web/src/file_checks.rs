//! Pure checks of uploaded files: the media type sniffed from the content, image dimensions
//! from the header, file-name sanitising, and the `Content-Disposition` of a download.
//!
//! Owns the rule that a file's type comes from its bytes, never from the client (name or
//! header), through a small table of magic numbers; anything not in it is
//! `application/octet-stream`, and text that looks like HTML, SVG or XML is never labelled as
//! text. Must never do I/O.

/// The media type of content starting with `head` (the first few KiB of the file).
pub fn sniff(head: &[u8]) -> &'static str {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if head.starts_with(PNG) {
        "image/png"
    } else if head.starts_with(b"\xff\xd8\xff") {
        "image/jpeg"
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        "image/gif"
    } else if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        "image/webp"
    } else if head.starts_with(b"%PDF-") {
        "application/pdf"
    } else if head.starts_with(b"PK\x03\x04")
        || head.starts_with(b"PK\x05\x06")
        || head.starts_with(b"PK\x07\x08")
    {
        "application/zip"
    } else if is_plain_text(head) {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// UTF-8 without NUL or other control characters besides tab, CR, LF and form feed (a
/// multi-byte character cut at the end of `head` is fine), and not markup a browser would
/// render (HTML, SVG, XML).
fn is_plain_text(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // Cut inside a character at the end of the sample: the valid prefix counts.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            match std::str::from_utf8(&head[..e.valid_up_to()]) {
                Ok(t) => t,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
    {
        return false;
    }
    !looks_like_markup(text)
}

fn looks_like_markup(text: &str) -> bool {
    let start = text.trim_start_matches('\u{feff}').trim_start();
    let lower: String = start.chars().take(512).collect::<String>().to_lowercase();
    const TAGS: &[&str] = &[
        "<!doctype",
        "<html",
        "<head",
        "<body",
        "<script",
        "<svg",
        "<?xml",
        "<iframe",
        "<!--",
        "<div",
        "<img",
        "<a ",
        "<style",
        "<meta",
        "<title",
        "<p>",
        "<table",
    ];
    TAGS.iter().any(|t| lower.starts_with(t)) || lower.contains("<script") || lower.contains("<svg")
}

/// Width and height from an image header, for the types whose header says it in fixed
/// places (PNG, GIF). Other images get theirs from the thumbnailer.
pub fn image_size(mime: &str, head: &[u8]) -> Option<(u32, u32)> {
    match mime {
        "image/png" if head.len() >= 24 && &head[12..16] == b"IHDR" => {
            let w = u32::from_be_bytes(head[16..20].try_into().ok()?);
            let h = u32::from_be_bytes(head[20..24].try_into().ok()?);
            Some((w, h))
        }
        "image/gif" if head.len() >= 10 => {
            let w = u16::from_le_bytes(head[6..8].try_into().ok()?);
            let h = u16::from_le_bytes(head[8..10].try_into().ok()?);
            Some((u32::from(w), u32::from(h)))
        }
        _ => None,
    }
}

/// Why a file name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the file name is empty")]
    Empty,
    #[error("the file name is longer than 255 bytes")]
    TooLong,
    #[error("the file name contains a path separator")]
    PathSeparator,
    #[error("the file name contains a control character")]
    Control,
    #[error("the file name contains a bidirectional-text control character")]
    Bidi,
    #[error("'.' and '..' are not file names")]
    Dots,
}

/// Unicode's bidirectional formatting characters (they can make `exe.txt` read as `txt.exe`).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// The stored form of a file name: surrounding white space trimmed; refused when empty, over
/// 255 bytes, or containing `/`, `\`, a control or a bidi character, or when `.`/`..`.
pub fn sanitize_name(name: &str) -> Result<String, NameError> {
    let n = name.trim();
    if n.is_empty() {
        return Err(NameError::Empty);
    }
    if n.len() > 255 {
        return Err(NameError::TooLong);
    }
    if n.contains(['/', '\\']) {
        return Err(NameError::PathSeparator);
    }
    if n.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if n.chars().any(is_bidi_control) {
        return Err(NameError::Bidi);
    }
    if n == "." || n == ".." {
        return Err(NameError::Dots);
    }
    Ok(n.to_string())
}

/// Whether a type may be shown inline by a browser (the safe image list); everything else is
/// downloaded as an attachment.
pub fn inline_ok(mime: &str) -> bool {
    cluster::state::views::INLINE_IMAGE_TYPES.contains(&mime)
}

/// `Content-Disposition` for a download of `name` (already sanitised): RFC 6266 with the
/// RFC 8187 `filename*` form, every byte outside `attr-char` percent-encoded.
pub fn content_disposition(mime: &str, name: &str) -> String {
    let kind = if inline_ok(mime) {
        "inline"
    } else {
        "attachment"
    };
    let mut enc = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(char::from(b));
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename*=UTF-8''{enc}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_follows_the_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), "image/jpeg");
        assert_eq!(sniff(b"GIF89a.."), "image/gif");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(sniff(b"%PDF-1.7"), "application/pdf");
        assert_eq!(sniff(b"PK\x03\x04...."), "application/zip");
        assert_eq!(
            sniff("héllo wörld\n".as_bytes()),
            "text/plain; charset=utf-8"
        );
        assert_eq!(sniff(b"<!DOCTYPE html><p>hi"), "application/octet-stream");
        assert_eq!(sniff(b"  <svg xmlns=...>"), "application/octet-stream");
        assert_eq!(
            sniff(b"hello <script>x</script>"),
            "application/octet-stream"
        );
        assert_eq!(sniff(b"\0\x01\x02binary"), "application/octet-stream");
        // A character cut at the end of the sample is still text.
        let cut = "aé".as_bytes();
        assert_eq!(sniff(&cut[..2]), "text/plain; charset=utf-8");
    }

    #[test]
    fn image_sizes() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&640u32.to_be_bytes());
        png.extend_from_slice(&480u32.to_be_bytes());
        assert_eq!(image_size("image/png", &png), Some((640, 480)));
        assert_eq!(
            image_size("image/gif", b"GIF89a\x02\x01\x03\x00"),
            Some((258, 3))
        );
        assert_eq!(image_size("image/jpeg", b"\xff\xd8\xff"), None);
    }

    #[test]
    fn names() {
        assert_eq!(sanitize_name("  report.pdf ").unwrap(), "report.pdf");
        assert_eq!(
            sanitize_name("../etc/passwd"),
            Err(NameError::PathSeparator)
        );
        assert_eq!(sanitize_name("..\\boot.ini"), Err(NameError::PathSeparator));
        assert_eq!(sanitize_name("a\u{202e}fdp.exe"), Err(NameError::Bidi));
        assert_eq!(sanitize_name("a\nb"), Err(NameError::Control));
        assert_eq!(sanitize_name(".."), Err(NameError::Dots));
        assert_eq!(sanitize_name("   "), Err(NameError::Empty));
        assert_eq!(sanitize_name(&"x".repeat(256)), Err(NameError::TooLong));
        assert_eq!(
            sanitize_name("Überblick 2026.txt").unwrap(),
            "Überblick 2026.txt"
        );
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            content_disposition("image/png", "a b.png"),
            "inline; filename*=UTF-8''a%20b.png"
        );
        assert_eq!(
            content_disposition("application/octet-stream", "x\".html"),
            "attachment; filename*=UTF-8''x%22.html"
        );
        assert_eq!(
            content_disposition("text/plain; charset=utf-8", "é"),
            "attachment; filename*=UTF-8''%C3%A9"
        );
    }
}
