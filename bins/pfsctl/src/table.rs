//! Aligned text for people: column tables and `name  value` field lists.

/// Columns are separated by this many spaces.
const GAP: usize = 2;

/// A table with a header row; every column as wide as its widest cell, no
/// trailing spaces, one row per line, ending with a newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        push_row(&mut out, row, &widths);
    }
    out
}

fn push_row(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str(&" ".repeat(GAP));
        }
        line.push_str(cell);
        if i + 1 < cells.len() {
            let width = widths.get(i).copied().unwrap_or(0);
            line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// `name  value` lines with the values aligned; a value spanning several
/// lines continues under its first line. Fields whose value is empty are
/// left out.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    let indent = " ".repeat(width + GAP);
    let mut out = String::new();
    for (name, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        for (i, line) in value.lines().enumerate() {
            let lead = if i == 0 {
                format!("{name:<width$}{}", " ".repeat(GAP))
            } else {
                indent.clone()
            };
            out.push_str(format!("{lead}{line}").trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_aligns_columns_to_the_widest_cell() {
        let text = table(
            &["ID", "SIZE"],
            &[
                vec!["a-long-id".into(), "1Gi".into()],
                vec!["b".into(), "10Ti".into()],
            ],
        );
        assert_eq!(text, "ID         SIZE\na-long-id  1Gi\nb          10Ti\n");
    }

    #[test]
    fn fields_align_values_and_indent_continuations() {
        let text = fields(&[
            ("name", "exa.csi.ddn.com".into()),
            ("skipped", String::new()),
            ("context", "a=1\nb=2".into()),
        ]);
        assert_eq!(
            text,
            "name     exa.csi.ddn.com\ncontext  a=1\n         b=2\n"
        );
    }

    proptest! {
        #[test]
        fn every_column_starts_at_the_same_offset_in_every_row(
            rows in prop::collection::vec(
                prop::collection::vec("[a-z0-9]{1,12}", 3), 1..8
            ),
        ) {
            let text = table(&["A", "B", "C"], &rows);
            let lines: Vec<&str> = text.lines().collect();
            prop_assert_eq!(lines.len(), rows.len() + 1);
            // Column starts in the header row.
            let starts: Vec<usize> = vec![0, lines[0].find('B').unwrap(), lines[0].find('C').unwrap()];
            for (line, row) in lines[1..].iter().zip(&rows) {
                for (start, cell) in starts.iter().zip(row) {
                    prop_assert_eq!(&line[*start..*start + cell.len()], cell.as_str());
                }
                prop_assert!(!line.ends_with(' '));
            }
        }
    }
}
