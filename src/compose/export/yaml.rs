//! The small YAML emitter of the Kubernetes export: mappings, sequences, double-quoted
//! strings and integers, with `#` comments among the fields (which no serde YAML writer
//! keeps).

/// A YAML value: enough of YAML for manifests, with comments.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Yaml {
    /// A string, always double-quoted (JSON's escapes, which YAML reads).
    Str(String),
    Int(u64),
    Map(Vec<Entry>),
    Seq(Vec<Yaml>),
}

impl Yaml {
    pub(super) fn str(text: impl Into<String>) -> Yaml {
        Yaml::Str(text.into())
    }
}

/// A mapping's entry, or a comment line among them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Entry {
    Field(&'static str, Yaml),
    Comment(String),
}

/// A field of a mapping.
pub(super) fn field(key: &'static str, value: Yaml) -> Entry {
    Entry::Field(key, value)
}

/// A comment line among a mapping's fields.
pub(super) fn comment(text: impl Into<String>) -> Entry {
    Entry::Comment(text.into())
}

/// A scalar's text, or `None` for a mapping or sequence with entries.
fn inline(value: &Yaml) -> Option<String> {
    match value {
        Yaml::Str(text) => Some(serde_json::Value::from(text.as_str()).to_string()),
        Yaml::Int(n) => Some(n.to_string()),
        Yaml::Map(entries) if entries.is_empty() => Some("{}".into()),
        Yaml::Seq(items) if items.is_empty() => Some("[]".into()),
        _ => None,
    }
}

/// Write `entries` as a block mapping at `indent`.
pub(super) fn render_map(entries: &[Entry], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for entry in entries {
        match entry {
            Entry::Comment(text) => {
                for line in text.lines() {
                    out.push_str(&format!("{pad}# {line}\n"));
                }
            }
            Entry::Field(key, value) => match inline(value) {
                Some(scalar) => out.push_str(&format!("{pad}{key}: {scalar}\n")),
                None => {
                    out.push_str(&format!("{pad}{key}:\n"));
                    render_block(value, indent + 2, out);
                }
            },
        }
    }
}

/// A mapping or sequence with entries, at `indent`.
fn render_block(value: &Yaml, indent: usize, out: &mut String) {
    match value {
        Yaml::Map(entries) => render_map(entries, indent, out),
        Yaml::Seq(items) => {
            let pad = " ".repeat(indent);
            for item in items {
                match inline(item) {
                    Some(scalar) => out.push_str(&format!("{pad}- {scalar}\n")),
                    None => {
                        // Rendered two deeper, then the first key line takes the dash.
                        let mut block = String::new();
                        render_block(item, indent + 2, &mut block);
                        let deeper = format!("{pad}  ");
                        let mut dashed = false;
                        for line in block.lines() {
                            match line.strip_prefix(&deeper) {
                                Some(rest) if !dashed && !rest.starts_with('#') => {
                                    out.push_str(&format!("{pad}- {rest}\n"));
                                    dashed = true;
                                }
                                _ => {
                                    out.push_str(line);
                                    out.push('\n');
                                }
                            }
                        }
                    }
                }
            }
        }
        scalar => out.push_str(&inline(scalar).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nests_maps_in_sequences_with_comments() {
        let doc = vec![
            comment("top"),
            field(
                "items",
                Yaml::Seq(vec![
                    Yaml::Map(vec![
                        comment("first"),
                        field("name", Yaml::str("a \"b\"")),
                        field("n", Yaml::Int(3)),
                    ]),
                    Yaml::str("plain"),
                ]),
            ),
            field("empty", Yaml::Map(vec![])),
        ];
        let mut out = String::new();
        render_map(&doc, 0, &mut out);
        assert_eq!(
            out,
            "# top\nitems:\n    # first\n  - name: \"a \\\"b\\\"\"\n    n: 3\n  - \"plain\"\nempty: {}\n"
        );
    }
}
