//! Text for the user's terminal. Messages quote bytes from images and registries (tar entry
//! names, the start of a layer that is not gzip, a server's error body); printed as they are,
//! an ESC starts an escape sequence in the user's terminal and a CR or newline forges a line
//! of its own. Every line rsing prints about something it did not write itself goes through
//! [`one_line`]: control characters (C0, DEL, C1), the Unicode line and paragraph separators
//! and the bidirectional overrides come out as `\x1b`, `\n`, `\u{202e}`, …; invalid UTF-8
//! (already U+FFFD by the time it is text) stays visible as such; and the line is cut to
//! [`MAX_LINE`] characters.

/// The longest line printed, in characters: longer ones end with a count of what was cut.
pub const MAX_LINE: usize = 2000;

/// Whether `c` must not reach a terminal as it is.
fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `text` made safe for a terminal and kept to one line of at most [`MAX_LINE`] characters.
pub fn one_line(text: &str) -> String {
    let mut line = Line::default();
    for c in text.chars() {
        line.push(Piece::Char(c));
    }
    line.finish()
}

/// Bytes (invalid UTF-8 included) made safe: invalid sequences come out as `\xNN`, not
/// U+FFFD, so the user sees what the input held.
pub fn bytes_line(bytes: &[u8]) -> String {
    let mut line = Line::default();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            line.push(Piece::Char(c));
        }
        for b in chunk.invalid() {
            line.push(Piece::Byte(*b));
        }
    }
    line.finish()
}

enum Piece {
    Char(char),
    Byte(u8),
}

/// A line being built: what is shown, and how much was cut after [`MAX_LINE`].
#[derive(Default)]
struct Line {
    out: String,
    shown: usize,
    cut: usize,
}

impl Line {
    fn push(&mut self, piece: Piece) {
        if self.shown >= MAX_LINE {
            self.cut += 1;
            return;
        }
        self.shown += 1;
        match piece {
            Piece::Char(c) if !hostile(c) => self.out.push(c),
            Piece::Char('\n') => self.out.push_str("\\n"),
            Piece::Char('\r') => self.out.push_str("\\r"),
            Piece::Char('\t') => self.out.push_str("\\t"),
            Piece::Char(c) if (c as u32) < 0x100 => {
                self.out.push_str(&format!("\\x{:02x}", c as u32))
            }
            Piece::Char(c) => self.out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            Piece::Byte(b) => self.out.push_str(&format!("\\x{b:02x}")),
        }
    }

    fn finish(mut self) -> String {
        if self.cut > 0 {
            self.out
                .push_str(&format!("… ({} more characters)", self.cut));
        }
        self.out
    }
}

/// A `tracing` writer for stderr that passes each formatted event through [`one_line`]: a
/// warning that quotes an image's bytes cannot escape its line either.
#[derive(Clone, Copy, Default)]
pub struct SafeStderr;

impl std::io::Write for SafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, "\n"),
            None => (buf, ""),
        };
        let line = format!("{}{newline}", bytes_line(body));
        std::io::stderr().write_all(line.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let hostile = "evil\x1b[2J\x1b]0;pwned\x07name\r\nrsing: error: forged\tline\x7f\u{9b}31m";
        let safe = one_line(hostile);
        assert_eq!(
            safe,
            "evil\\x1b[2J\\x1b]0;pwned\\x07name\\r\\nrsing: error: forged\\tline\\x7f\\x9b31m"
        );
        assert!(!safe.chars().any(|c| c.is_control()));
    }

    #[test]
    fn bidi_and_separators_are_escaped() {
        let safe = one_line("a\u{202e}gpj.exe\u{2028}b\u{2066}c");
        assert_eq!(safe, "a\\u{202e}gpj.exe\\u{2028}b\\u{2066}c");
        // Ordinary non-ASCII text is left alone.
        assert_eq!(one_line("Grüße, 東京 ✓"), "Grüße, 東京 ✓");
    }

    #[test]
    fn invalid_utf8_is_shown_as_bytes() {
        assert_eq!(
            bytes_line(b"ok\xff\xfe\x1b[0m\xc3"),
            "ok\\xff\\xfe\\x1b[0m\\xc3"
        );
        assert_eq!(bytes_line("é".as_bytes()), "é");
    }

    #[test]
    fn long_lines_are_cut_with_a_count() {
        let long = "x".repeat(MAX_LINE + 500);
        let safe = one_line(&long);
        assert!(
            safe.ends_with("… (500 more characters)"),
            "{}",
            &safe[MAX_LINE - 5..]
        );
        assert_eq!(safe.chars().filter(|c| *c == 'x').count(), MAX_LINE);
        assert_eq!(one_line(&"y".repeat(MAX_LINE)).len(), MAX_LINE);
    }
}
