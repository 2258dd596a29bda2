//! The BeeGFS 8 tool's structured output: a space-aligned table with upper-case headers followed
//! by a blank line, or JSON (`--output json|json-pretty|ndjson`) with one object per row keyed by
//! the column names.

use serde_json::{Map, Value};

/// Output formats of `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The default table.
    Table,
    /// One JSON list.
    Json,
    /// One indented JSON list.
    JsonPretty,
    /// One JSON object per line.
    Ndjson,
}

impl OutputFormat {
    /// Parses an `--output` value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "table" => Some(OutputFormat::Table),
            "json" => Some(OutputFormat::Json),
            "json-pretty" => Some(OutputFormat::JsonPretty),
            "ndjson" => Some(OutputFormat::Ndjson),
            _ => None,
        }
    }
}

/// Renders rows (each as many values as `columns`).
pub fn render(columns: &[&str], rows: &[Vec<Value>], format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(columns, rows),
        OutputFormat::Json | OutputFormat::JsonPretty | OutputFormat::Ndjson => {
            let objects: Vec<Value> = rows
                .iter()
                .map(|row| {
                    let map: Map<String, Value> = columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| (c.to_string(), v.clone()))
                        .collect();
                    Value::Object(map)
                })
                .collect();
            match format {
                OutputFormat::Ndjson => objects.iter().map(|o| format!("{o}\n")).collect(),
                OutputFormat::JsonPretty => format!(
                    "{}\n\n",
                    serde_json::to_string_pretty(&Value::Array(objects)).unwrap_or_default()
                ),
                _ => format!("{}\n\n", Value::Array(objects)),
            }
        }
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn render_table(columns: &[&str], rows: &[Vec<Value>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut grid: Vec<Vec<String>> = vec![columns.iter().map(|c| c.to_uppercase()).collect()];
    grid.extend(rows.iter().map(|r| r.iter().map(cell).collect()));
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            grid.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in grid {
        let mut line = String::new();
        for (i, value) in row.iter().enumerate() {
            line.push_str(value);
            let pad = widths[i] - value.chars().count() + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_end_with_a_blank_line() {
        let text = render(
            &["name", "id"],
            &[
                vec![json!("grp"), json!(1000)],
                vec![json!("longer"), json!(7)],
            ],
            OutputFormat::Table,
        );
        assert_eq!(text, "NAME    ID\ngrp     1000\nlonger  7\n\n");
    }

    #[test]
    fn json_rows_are_objects() {
        let text = render(
            &["name", "id"],
            &[vec![json!("g"), json!(1)]],
            OutputFormat::Json,
        );
        assert_eq!(text, "[{\"id\":1,\"name\":\"g\"}]\n\n");
        assert_eq!(
            render(&["a"], &[vec![json!(1)]], OutputFormat::Ndjson),
            "{\"a\":1}\n"
        );
        assert_eq!(OutputFormat::parse("yaml"), None);
    }

    proptest! {
        #[test]
        fn every_table_row_starts_with_its_first_cell(cells in prop::collection::vec("[a-z0-9]{1,8}", 1..5)) {
            let rows: Vec<Vec<Value>> = cells.iter().map(|c| vec![json!(c), json!("x")]).collect();
            let text = render(&["a", "b"], &rows, OutputFormat::Table);
            let lines: Vec<&str> = text.lines().collect();
            prop_assert_eq!(lines.len(), cells.len() + 2);
            for (line, c) in lines[1..].iter().zip(&cells) {
                prop_assert!(line.starts_with(c.as_str()));
            }
        }
    }
}
