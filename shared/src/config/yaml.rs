//! Where each key of a YAML config file stands, so that every error names its line.
//!
//! serde_yaml gives positions for syntax errors only: a problem found after
//! parsing (a dangling reference, a wrong value) would lose its line, and a key
//! written twice in one mapping is taken silently, the last one winning. This
//! index, built from the parser's events, maps every key path to the line of the
//! key and lists every key written twice.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl Segment {
    pub fn key(name: &str) -> Segment {
        Segment::Key(name.to_string())
    }
}

/// `syncs.crm.mappings[2].to`, as users write paths.
pub fn display_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub path: Vec<Segment>,
    pub first_line: usize,
    pub second_line: usize,
}

/// A YAML syntax error, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct YamlIndex {
    lines: HashMap<Vec<Segment>, usize>,
    pub duplicates: Vec<DuplicateKey>,
}

impl YamlIndex {
    pub fn build(text: &str) -> Result<YamlIndex, SyntaxError> {
        let mut builder = Builder::default();
        Parser::new_from_str(text)
            .load(&mut builder, false)
            .map_err(|error| SyntaxError {
                line: error.marker().line(),
                message: error.info().to_string(),
            })?;
        Ok(builder.index)
    }

    /// The line of the deepest key on `path` that the document has: the field
    /// itself when it is written, else the mapping that lacks it.
    pub fn line_of(&self, path: &[Segment]) -> Option<usize> {
        (1..=path.len()).rev().find_map(|n| self.lines.get(&path[..n]).copied())
    }
}

enum Frame {
    Mapping {
        path: Vec<Segment>,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
        seen: HashMap<String, usize>,
    },
    Sequence {
        path: Vec<Segment>,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    index: YamlIndex,
}

impl Builder {
    /// Where the node starting at `mark` sits (records a list element's line).
    fn value_path(&mut self, mark: Marker) -> Vec<Segment> {
        match self.stack.last() {
            Some(Frame::Mapping { path, key, .. }) => {
                let mut path = path.clone();
                path.push(Segment::Key(key.clone().unwrap_or_default()));
                path
            }
            Some(Frame::Sequence { path, next }) => {
                let mut path = path.clone();
                path.push(Segment::Index(*next));
                self.index.lines.entry(path.clone()).or_insert(mark.line());
                path
            }
            None => Vec::new(),
        }
    }

    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Mapping { key, .. }) => *key = None,
            Some(Frame::Sequence { next, .. }) => *next += 1,
            None => {}
        }
    }

    /// A scalar where a mapping expects its next key: records it.
    fn take_key(&mut self, text: &str, mark: Marker) -> bool {
        let Some(Frame::Mapping { path, key, seen }) = self.stack.last_mut() else {
            return false;
        };
        if key.is_some() {
            return false;
        }
        let mut key_path = path.clone();
        key_path.push(Segment::Key(text.to_string()));
        match seen.get(text) {
            Some(&first_line) => self.index.duplicates.push(DuplicateKey {
                path: key_path,
                first_line,
                second_line: mark.line(),
            }),
            None => {
                seen.insert(text.to_string(), mark.line());
                self.index.lines.entry(key_path).or_insert(mark.line());
            }
        }
        *key = Some(text.to_string());
        true
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            // A scalar or alias where a key is expected is that key; elsewhere a value.
            Event::Scalar(text, ..) if self.take_key(&text, mark) => {}
            Event::Alias(_) if self.take_key("*alias", mark) => {}
            Event::Scalar(..) | Event::Alias(_) => {
                self.value_path(mark);
                self.value_done();
            }
            Event::MappingStart(..) => {
                let path = self.value_path(mark);
                self.stack.push(Frame::Mapping {
                    path,
                    key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.value_path(mark);
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(parts: &[&str]) -> Vec<Segment> {
        parts
            .iter()
            .map(|p| match p.parse::<usize>() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::key(p),
            })
            .collect()
    }

    #[test]
    fn every_key_has_its_line_in_block_and_flow_style() {
        let text =
            "syncs:\n  a:\n    model: m\n    mappings:\n      - { from: x, to: y }\n      - from: z\n        to: w\n";
        let index = YamlIndex::build(text).unwrap();
        assert_eq!(index.line_of(&path(&["syncs", "a", "model"])), Some(3));
        assert_eq!(index.line_of(&path(&["syncs", "a", "mappings", "0", "to"])), Some(5));
        assert_eq!(index.line_of(&path(&["syncs", "a", "mappings", "1", "to"])), Some(7));
        // A field that is not written: the line of the deepest key that is.
        assert_eq!(index.line_of(&path(&["syncs", "a", "mode"])), Some(2));
        assert!(index.duplicates.is_empty());
    }

    #[test]
    fn duplicate_keys_are_found_with_both_lines() {
        let text = "models:\n  a:\n    source: s\n    source: t\n  b: {}\n  a: {}\n";
        let index = YamlIndex::build(text).unwrap();
        let found: Vec<(String, usize, usize)> = index
            .duplicates
            .iter()
            .map(|d| (display_path(&d.path), d.first_line, d.second_line))
            .collect();
        assert_eq!(
            found,
            vec![("models.a.source".to_string(), 3, 4), ("models.a".to_string(), 2, 6)]
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let error = YamlIndex::build("a:\n  b: [1, 2\nc: d\n").unwrap_err();
        assert!(error.line >= 2, "{error:?}");
    }
}
