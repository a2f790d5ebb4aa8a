//! A streaming parser for Postgres's `COPY … TO STDOUT` text format: one row per
//! line, fields separated by tabs, `\N` for NULL, and backslash escapes.

/// Parses lines into one reused buffer, so a row costs no allocation here: the
/// callback sees each field as a slice of it.
#[derive(Default)]
pub(super) struct LineParser {
    partial: Vec<u8>,
    /// The current line's fields, unescaped, back to back.
    text: Vec<u8>,
    /// Each field's span in `text`; `None` for NULL.
    spans: Vec<Option<(usize, usize)>>,
}

/// One parsed line.
pub(super) struct Fields<'a> {
    text: &'a [u8],
    spans: &'a [Option<(usize, usize)>],
}

impl Fields<'_> {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Field `i` as text (invalid UTF-8 replaced), `None` for NULL.
    pub fn get(&self, i: usize) -> Option<std::borrow::Cow<'_, str>> {
        self.spans[i].map(|(start, end)| String::from_utf8_lossy(&self.text[start..end]))
    }
}

impl LineParser {
    /// Feeds bytes as they arrive; calls `row` for every complete line.
    pub fn feed(&mut self, mut bytes: &[u8], mut row: impl FnMut(&Fields<'_>)) {
        while let Some(newline) = memchr(b'\n', bytes) {
            let line = &bytes[..newline];
            if self.partial.is_empty() {
                self.parse_line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.parse_line(&whole);
                whole.clear();
                self.partial = whole;
            }
            row(&Fields {
                text: &self.text,
                spans: &self.spans,
            });
            bytes = &bytes[newline + 1..];
        }
        self.partial.extend_from_slice(bytes);
    }

    /// Whether bytes after the last newline wait for the rest of their line.
    pub fn has_partial_line(&self) -> bool {
        !self.partial.is_empty()
    }

    fn parse_line(&mut self, line: &[u8]) {
        self.text.clear();
        self.spans.clear();
        for raw in line.split(|&b| b == b'\t') {
            if raw == b"\\N" {
                self.spans.push(None);
            } else {
                let start = self.text.len();
                unescape_into(raw, &mut self.text);
                self.spans.push(Some((start, self.text.len())));
            }
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

fn unescape_into(raw: &[u8], out: &mut Vec<u8>) {
    if !raw.contains(&b'\\') {
        out.extend_from_slice(raw);
        return;
    }
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 == raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let next = raw[i + 1];
        i += 2;
        match next {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = (next - b'0') as u32;
                let mut digits = 1;
                while digits < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    value = value * 8 + (raw[i] - b'0') as u32;
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    value = value * 16 + (raw[i] as char).to_digit(16).unwrap();
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<Vec<Option<String>>> {
        let mut parser = LineParser::default();
        let mut rows = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |fields| {
                rows.push(
                    (0..fields.len())
                        .map(|i| fields.get(i).map(|f| f.into_owned()))
                        .collect(),
                )
            });
        }
        rows
    }

    #[test]
    fn nulls_escapes_and_split_lines() {
        let rows = parse_all(&[b"1\ta\\tb\t\\N\n2\tline\\nbreak", b"\t\\\\x\n3\t\t\\N\n"]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], vec![Some("1".into()), Some("a\tb".into()), None]);
        assert_eq!(
            rows[1],
            vec![Some("2".into()), Some("line\nbreak".into()), Some("\\x".into())]
        );
        assert_eq!(rows[2], vec![Some("3".into()), Some(String::new()), None]);
    }

    #[test]
    fn octal_and_utf8() {
        let rows = parse_all(&["é\\101\n".as_bytes()]);
        assert_eq!(rows[0], vec![Some("éA".into())]);
    }
}
