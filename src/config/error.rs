//! Configuration errors: every one names the file, the line and column of the offending value
//! and its field path, so `backflow validate` can print a list a user fixes without guessing.
//!
//! Stage one (YAML syntax, unknown keys, wrong types) yields one error per file, converted from
//! the `serde-saphyr` error here; stage two (semantic checks) collects all errors of a file.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_path_to_error::Segment;
use serde_saphyr::{Localizer, MessageFormatter, RenderOptions, SnippetMode};

/// One configuration error, located in its file.
///
/// Displayed as `file:line:column: path: message`; `:line:column` is left out when the position
/// is unknown (line 0, e.g. an unreadable file) and `path: ` when the error concerns the whole
/// file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in (`<environment>` for environment variables).
    pub file: PathBuf,
    /// 1-based line of the offending value; 0 when unknown.
    pub line: u64,
    /// 1-based column of the offending value; 0 when unknown.
    pub column: u64,
    /// Field path such as `transforms[2].derive.amount_cents` or `source.url`; may be empty.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error at a known position (`line`/`column` 0 when unknown).
    pub fn new(
        file: impl Into<PathBuf>,
        (line, column): (u64, u64),
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line,
            column,
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error at a YAML location.
    pub(crate) fn at(
        file: &Path,
        location: serde_saphyr::Location,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(file, (location.line(), location.column()), path, message)
    }

    /// An error about a whole file (no position, no path), e.g. one that cannot be read.
    pub(crate) fn file(file: &Path, message: impl Into<String>) -> Self {
        Self::new(file, (0, 0), "", message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Collects the semantic errors of one file (stage two), so that all of them are reported.
#[derive(Debug)]
pub(crate) struct Collector<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(file: &'a Path) -> Self {
        Self {
            file,
            errors: Vec::new(),
        }
    }

    /// Records an error at `at`.
    pub(crate) fn push(
        &mut self,
        at: serde_saphyr::Location,
        path: &str,
        message: impl Into<String>,
    ) {
        self.errors
            .push(ConfigError::at(self.file, at, path, message));
    }

    /// Records errors found elsewhere (e.g. in a referenced schema file).
    pub(crate) fn extend(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
    }

    /// The value of `result`, or `None` after recording its error at `at`.
    pub(crate) fn check<T>(
        &mut self,
        at: serde_saphyr::Location,
        path: &str,
        result: Result<T, String>,
    ) -> Option<T> {
        result.map_err(|message| self.push(at, path, message)).ok()
    }

    /// The built value if no error was recorded, else every error.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, Vec<ConfigError>> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ if self.errors.is_empty() => {
                Err(vec![ConfigError::file(self.file, "invalid configuration")])
            }
            _ => Err(self.errors),
        }
    }
}

/// Whether a YAML text has no content (empty, or comments only).
pub(crate) fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#') || line == "---")
}

/// Parses `text` into `T` (stage one), tracking the field path for the error.
pub(crate) fn parse_yaml<T>(file: &Path, text: &str) -> Result<T, ConfigError>
where
    T: for<'de> Deserialize<'de>,
{
    let mut tracked = None;
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = field_path(err.path());
            let inner = err.into_inner();
            tracked = Some(path);
            inner
        })
    });
    result.map_err(|err| {
        let location = err.location().unwrap_or(serde_saphyr::Location::UNKNOWN);
        // Syntax errors found after the value was built have no tracked path.
        ConfigError::at(
            file,
            location,
            tracked.unwrap_or_default(),
            yaml_message(&err),
        )
    })
}

/// Renders a path as `a.b[2].c`, dropping the segments serde-saphyr adds for located values
/// (`value`; no field of the formats has that name) and the segments it cannot name.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key == "value" => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// serde-saphyr's message without its "at line X, column Y" suffix and without a snippet:
/// the position goes into [`ConfigError`]'s own fields.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    let mut options = RenderOptions::new(&PlainMessages);
    options.snippets = SnippetMode::Off;
    err.render_with_options(options)
}

/// A message formatter that leaves positions out.
struct PlainMessages;

impl Localizer for PlainMessages {
    fn attach_location<'a>(
        &self,
        base: Cow<'a, str>,
        _loc: serde_saphyr::Location,
    ) -> Cow<'a, str> {
        base
    }
}

impl MessageFormatter for PlainMessages {
    fn localizer(&self) -> &dyn Localizer {
        self
    }

    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> Cow<'a, str> {
        serde_saphyr::DefaultMessageFormatter.format_message(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: serde_saphyr::Spanned<String>,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        size: serde_saphyr::Spanned<u32>,
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse_yaml::<Doc>(Path::new("f.yaml"), text) {
            Ok(doc) => panic!("expected an error, got {doc:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn display_has_file_position_path_and_message() {
        let err = ConfigError::new("p.yaml", (3, 7), "source.url", "bad");
        assert_eq!(err.to_string(), "p.yaml:3:7: source.url: bad");
        let err = ConfigError::new("p.yaml", (0, 0), "", "cannot read");
        assert_eq!(err.to_string(), "p.yaml: cannot read");
    }

    #[test]
    fn unknown_key_is_located_with_its_path() {
        let err = parse_err("name: x\nitems:\n  - size: 1\n  - sise: 2\n");
        assert_eq!(
            err.to_string(),
            "f.yaml:4:5: items[1].sise: unknown field `sise`, expected one of size"
        );
    }

    #[test]
    fn wrong_type_drops_the_located_value_segment() {
        let err = parse_err("name: x\nitems:\n  - size: big\n");
        assert_eq!(
            (err.line, err.column, err.path.as_str()),
            (3, 11, "items[0].size")
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse_err("name: 'x\n");
        assert_eq!((err.line, err.column), (1, 7));
        assert!(err.message.contains("unclosed quote"), "{err}");
    }
}
